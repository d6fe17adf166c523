"""The asyncio bridge (trio-asyncio), with asyncio's stray errors contained.

trio-asyncio's default loop exception handler re-raises whatever asyncio reports into the
loop's nursery (`propagate_asyncio_error`), which ends the whole process. asyncio reports
errors nobody is waiting for any more: a future whose exception was never retrieved, a
callback that raised. asyncpg leaves such futures behind when a connection attempt is
cancelled in the same instant the server drops it (a Postgres restart or failover:
`ConnectionError: unexpected connection_lost() call`). The attempt itself already failed
as a value to its caller and the pool simply connects again, so the report is only worth a
log line and a count, never an exit.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio_asyncio

log = logging.getLogger(__name__)

ErrorCounter = Callable[[str], None]


def _contain(on_error: ErrorCounter | None) -> Callable[[Any, dict[str, Any]], None]:
    def handler(_loop: Any, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        kind = type(exc).__name__ if exc is not None else "message"
        # the message and the exception's text only: no traceback, no repr of transports or
        # protocols (their reprs may carry connection parameters)
        log.warning("asyncio.stray_error", extra={"error": kind, "detail": str(exc or "")[:200],
                                                  "context": str(context.get("message", ""))[:200]})
        if on_error is not None:
            on_error(kind)
    return handler


@asynccontextmanager
async def open_asyncio_bridge(on_error: ErrorCounter | None = None) -> AsyncIterator[None]:
    """`trio_asyncio.open_loop()` whose stray asyncio errors are logged and counted, not raised."""
    async with trio_asyncio.open_loop() as loop:
        loop.set_exception_handler(_contain(on_error))
        yield
