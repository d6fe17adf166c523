"""The runtime: the snapshot actor and the cycles it runs (agent actors come next)."""
