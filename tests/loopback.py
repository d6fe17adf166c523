"""Serve a test app for real on 127.0.0.1 (port chosen by the OS) for the length of a block."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import trio
from quart_trio import QuartTrio

from http_api.server import hypercorn_config, serve_http


@asynccontextmanager
async def serving(app: QuartTrio, *, graceful_timeout_s: float = 0.2) -> AsyncIterator[str]:
    """Yields the base URL; on exit, requests still running are cut after `graceful_timeout_s`."""
    config = hypercorn_config("127.0.0.1", 0, graceful_timeout_s)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve_http, app, config, shutdown.wait))
        try:
            yield binds[0]
        finally:
            shutdown.set()
