"""The HTTP front: quart-trio app on hypercorn's trio worker."""
