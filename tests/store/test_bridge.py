"""asyncio's stray errors (futures nobody retrieves) must not end the process."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
import trio
import trio_asyncio
from trio_asyncio import aio_as_trio

from store.bridge import open_asyncio_bridge


async def _abandon_a_failed_future() -> None:
    """What asyncpg leaves behind when a connect is cancelled as the server drops it."""
    future = asyncio.get_running_loop().create_future()
    future.set_exception(ConnectionError("unexpected connection_lost() call"))
    del future
    gc.collect()  # asyncio reports "exception was never retrieved" when the future is collected


async def test_plain_trio_asyncio_raises_a_stray_error_into_its_nursery() -> None:
    # the defect the bridge exists for: without it, the stray error ends the loop's owner
    with pytest.raises(BaseException) as caught:
        async with trio_asyncio.open_loop():
            await aio_as_trio(_abandon_a_failed_future)()
            await trio.sleep(0.05)
    assert "unexpected connection_lost() call" in repr(caught.value)


async def test_the_bridge_logs_and_counts_a_stray_error_and_carries_on(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []
    caplog.set_level(logging.WARNING)
    async with open_asyncio_bridge(seen.append):
        await aio_as_trio(_abandon_a_failed_future)()
        await trio.sleep(0.05)
        assert await aio_as_trio(asyncio.sleep)(0, "still running") == "still running"
    assert seen == ["ConnectionError"]
    lines = [r for r in caplog.records if r.getMessage() == "asyncio.stray_error"]
    assert len(lines) == 1 and lines[0].__dict__["error"] == "ConnectionError"
    assert lines[0].exc_info is None  # one line, no traceback
