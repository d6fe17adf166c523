"""The asyncpg pool, opened and closed from trio (one bridge per call, bounded close)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import trio
from trio_asyncio import aio_as_trio

from store.errors import DRIVER_ERRORS, DatabaseUnavailable
from store.sql import Q

log = logging.getLogger(__name__)

Pool = asyncpg.Pool


async def _init_connection(conn: asyncpg.Connection) -> None:
    # JSON in and out as Python values; every unit relies on this
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _create_pool(dsn: str, size: int) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        timeout=10,
        command_timeout=60,  # server-side backstop; trio deadlines are the real bound
        init=_init_connection,
        server_settings={"application_name": "mana-ai"},
    )
    return pool


async def connect_with_retry(dsn: str, size: int, timeout_s: float) -> asyncpg.Pool:
    """Open the pool, retrying with backoff until `timeout_s` passes (DB may start later)."""
    deadline = trio.current_time() + timeout_s
    delay = 0.25
    while True:
        try:
            pool: asyncpg.Pool = await aio_as_trio(_create_pool)(dsn, size)
            return pool
        except DRIVER_ERRORS as exc:
            if trio.current_time() + delay > deadline:
                raise DatabaseUnavailable(f"cannot connect to Postgres: {exc}") from exc
            log.warning("db.connect_failed", extra={"error": str(exc), "retry_in_s": delay})
            await trio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def close_pool(pool: asyncpg.Pool, timeout_s: float = 5.0) -> None:
    """Close shielded and bounded; `terminate()` if a connection is stuck (stack-notes §2.1)."""
    with trio.CancelScope(shield=True):
        with trio.move_on_after(timeout_s) as scope:
            await aio_as_trio(pool.close)()
        if scope.cancelled_caught:
            log.warning("db.pool_close_timeout", extra={"timeout_s": timeout_s})
            pool.terminate()


@asynccontextmanager
async def open_pool(dsn: str, size: int, connect_timeout_s: float) -> AsyncIterator[asyncpg.Pool]:
    pool = await connect_with_retry(dsn, size, connect_timeout_s)
    try:
        yield pool
    finally:
        await close_pool(pool)


async def _ping(pool: asyncpg.Pool) -> Any:
    async with pool.acquire(timeout=2) as conn:
        return await conn.fetchval(Q["ping"], timeout=2)


async def ping(pool: asyncpg.Pool, timeout_s: float = 2.0) -> bool:
    """Whether the database answers within `timeout_s`."""
    with trio.move_on_after(timeout_s):
        try:
            return bool(await aio_as_trio(_ping)(pool) == 1)
        except DRIVER_ERRORS:
            return False
    return False
