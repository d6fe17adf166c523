"""The asyncpg pool, opened and closed from trio (one bridge per call, bounded close)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release, replacing asyncpg's reset query (`pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL`, one round trip per checkout): no unit leaves session
    state behind — settings are `set_config(…, true)`, locks `pg_advisory_xact_lock`, LISTEN
    has its own connection. asyncpg still rolls back a transaction left open (a cancelled
    unit) before calling this. tests/store/test_pool.py checks that nothing leaks."""


Pooler = Literal["none", "transaction"]


def statement_cache_size(pooler: Pooler) -> int:
    """asyncpg's per-connection cache of named prepared statements: on by default (each
    statement is parsed once per connection); off behind a transaction pooler (pure).

    A transaction pooler (PgBouncer `pool_mode = transaction`, pgcat, Supavisor's transaction
    mode, RDS Proxy) may run each transaction of one of our connections on another server
    connection, where a statement prepared by an earlier transaction does not exist. With the
    cache off, asyncpg sends every statement unnamed, parsed and executed in one round trip
    that ends with its own Sync, so nothing outlives the statement on the server."""
    return 0 if pooler == "transaction" else 100


async def _create_pool(dsn: str, size: int, pooler: Pooler = "none") -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        timeout=10,
        command_timeout=60,  # server-side backstop; trio deadlines are the real bound
        init=_init_connection,
        reset=_keep_session,
        statement_cache_size=statement_cache_size(pooler),
        server_settings={"application_name": "mana-ai"},
    )
    return pool


def database_address(dsn: str) -> str:
    """Where a DSN points, for messages: `host:port/database`, never credentials (pure)."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or parse_qs(parts.query).get("host", ["localhost"])[0]
        port = parts.port or int(parse_qs(parts.query).get("port", ["5432"])[0])
    except ValueError:
        return "<unparsable address>"
    return f"{host}:{port}{parts.path or '/'}"


async def connect_with_retry(dsn: str, size: int, timeout_s: float, *, pooler: Pooler = "none") -> asyncpg.Pool:
    """Open the pool, retrying with backoff for at most `timeout_s` in all (the DB may start
    later); then `DatabaseUnavailable` naming the address (never the credentials). `pooler`:
    what sits between us and Postgres (MANA_AI_DB_POOLER; `statement_cache_size`)."""
    deadline = trio.current_time() + timeout_s
    delay = 0.25
    where = database_address(dsn)
    while True:
        error: BaseException | None = None
        with trio.move_on_at(deadline):  # one attempt may hang (a host that drops packets)
            try:
                pool: asyncpg.Pool = await aio_as_trio(_create_pool)(dsn, size, pooler)
                return pool
            except DRIVER_ERRORS as exc:
                error = exc
        if error is None or trio.current_time() + delay > deadline:
            reason = "no answer" if error is None else f"{type(error).__name__}: {error}"
            raise DatabaseUnavailable(f"cannot connect to Postgres at {where} within {timeout_s:g}s "
                                      f"({reason})") from error
        log.warning("db.connect_failed", extra={"at": where, "error": str(error), "retry_in_s": delay})
        await trio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def close_pool(pool: asyncpg.Pool, timeout_s: float = 5.0) -> None:
    """Close shielded and bounded; `terminate()` if a connection is stuck (a plain close would wait)."""
    with trio.CancelScope(shield=True):
        with trio.move_on_after(timeout_s) as scope:
            await aio_as_trio(pool.close)()
        if scope.cancelled_caught:
            log.warning("db.pool_close_timeout", extra={"timeout_s": timeout_s})
            pool.terminate()


@asynccontextmanager
async def open_pool(dsn: str, size: int, connect_timeout_s: float,
                    *, pooler: Pooler = "none") -> AsyncIterator[asyncpg.Pool]:
    pool = await connect_with_retry(dsn, size, connect_timeout_s, pooler=pooler)
    try:
        yield pool
    finally:
        await close_pool(pool)


async def _ping(pool: asyncpg.Pool, timeout_s: float) -> Any:
    async with pool.acquire(timeout=timeout_s) as conn:
        return await conn.fetchval(Q["ping"], timeout=timeout_s)


Probe = Literal["ok", "failed", "timeout"]


async def probe(pool: asyncpg.Pool, timeout_s: float = 2.0) -> Probe:
    """Whether the database answers `SELECT 1`: it did, it failed, or no answer within `timeout_s`
    (which an overloaded daemon cannot tell from a slow database). asyncpg finishes cancelling
    a stuck query before it lets go, so a failure that ends after the deadline is a timeout."""
    started = trio.current_time()
    answered = False
    with trio.move_on_after(timeout_s) as scope:
        try:
            answered = await aio_as_trio(_ping)(pool, timeout_s) == 1
        except DRIVER_ERRORS:
            pass
    if answered:
        return "ok"
    late = scope.cancelled_caught or trio.current_time() - started >= timeout_s
    return "timeout" if late else "failed"


async def ping(pool: asyncpg.Pool, timeout_s: float = 2.0) -> bool:
    """Whether the database answers within `timeout_s`."""
    return await probe(pool, timeout_s) == "ok"
