"""Bounded reads of httpx response bodies, shared by the research clients."""

from __future__ import annotations

import httpx
import trio


def declared_larger_than(response: httpx.Response, limit: int) -> bool:
    """Whether `Content-Length` already says the body exceeds `limit` bytes."""
    declared = response.headers.get("content-length", "")
    return declared.isascii() and declared.isdigit() and int(declared) > limit


async def read_up_to(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the (decoded) body, and whether there was more.

    Stopping early cancels the read instead of breaking out of the loop: `aiter_bytes` wraps
    async generators of httpx and httpcore that a `break` would leave to the garbage
    collector (a ResourceWarning under trio, encode/httpx#3686). A cancel raised inside them
    finishes every one, and httpcore closes the connection as on any cancelled read.
    """
    body = bytearray()
    more = False
    with trio.CancelScope() as stop:
        async for chunk in response.aiter_bytes():
            if more:
                continue  # already buffered: no checkpoint to cancel at
            body += chunk
            if len(body) > limit:
                more = True
                stop.cancel()
    return bytes(body[:limit]), more
