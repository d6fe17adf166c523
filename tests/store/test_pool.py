"""The pool skips asyncpg's reset query: prove that no unit leaves session state behind."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import trio
from trio_asyncio import aio_as_trio

from fake_llm import plan_reply, running_fake_llm
from planning import CREATE_TASK, agent_row, planning_runtime, written_rows
from seed import insert_rows, mission
from store.migrate import migrate
from store.pool import close_pool, connect_with_retry

_SESSION = """SELECT coalesce(current_setting('app.current_user_id', true), '') AS app_user,
       (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory') AS advisory_locks,
       (SELECT count(*) FROM pg_listening_channels()) AS listening,
       pg_backend_pid() AS pid"""


async def _session_state(pool: asyncpg.Pool) -> dict[str, Any]:
    async with pool.acquire() as conn:
        in_transaction = conn.is_in_transaction()
        row = await conn.fetchrow(_SESSION)
    return {**dict(row), "in_transaction": in_transaction}


async def _leak_a_session_setting(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("SELECT set_config('app.current_user_id', 'leaked', false)")


async def _slow_unit(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT set_config('app.current_user_id', 'u-1', true)")
        await conn.execute("SELECT pg_advisory_xact_lock(42)")
        await conn.execute("SELECT pg_sleep(5)")


async def test_no_unit_leaves_session_state_on_the_pooled_connection(aio_loop: None, db_dsn: str) -> None:
    pool = await connect_with_retry(db_dsn, 1, 10)  # one connection: every unit runs on it
    try:
        first = await aio_as_trio(_session_state)(pool)
        await migrate(pool, create_sync_changes=True)  # advisory xact lock, DDL
        await insert_rows(pool, agent_row("a1", maxTokensPerDay=100_000),  # budget lock + reservation
                          mission("m1", agent_id="a1"), mission("m2", agent_id=None))
        async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
            async with planning_runtime(pool, llm) as runtime:  # set_config in withUser, write-back
                stats = await runtime.snapshots.run_cycle()
        assert stats.plans_written_back == 2 and len(await written_rows(pool)) == 2
        with trio.move_on_after(0.3):  # a unit cancelled mid-transaction (asyncpg rolls it back)
            await aio_as_trio(_slow_unit)(pool)
        after = await aio_as_trio(_session_state)(pool)
        assert after == {**first, "in_transaction": False}
        assert after == {"app_user": "", "advisory_locks": 0, "listening": 0, "pid": first["pid"],
                         "in_transaction": False}
    finally:
        await close_pool(pool)


async def test_the_check_sees_a_leak_when_there_is_one(aio_loop: None, db_dsn: str) -> None:
    # the contract the reset relies on: a session-level setting WOULD survive the checkout
    pool = await connect_with_retry(db_dsn, 1, 10)
    try:
        await aio_as_trio(_leak_a_session_setting)(pool)
        assert (await aio_as_trio(_session_state)(pool))["app_user"] == "leaked"
    finally:
        await close_pool(pool)


_SESSION_LEVEL = re.compile(r"^\s*(SET|RESET|LISTEN|DECLARE|PREPARE)\b|pg_advisory_lock(_shared)?\s*\("
                            r"|set_config\([^)]*,\s*false\s*\)", re.IGNORECASE | re.MULTILINE)


def test_no_statement_takes_session_level_state() -> None:
    # what would need the reset query: session SET/LISTEN/cursors, session advisory locks and settings
    from store.sql import Q

    assert _SESSION_LEVEL.search("SET statement_timeout = 5") and _SESSION_LEVEL.search("SELECT pg_advisory_lock(1)")
    assert [name for name, sql in Q.items() if _SESSION_LEVEL.search(_without_updates(sql))] == []


def _without_updates(sql: str) -> str:
    """`UPDATE … SET col = …` sets a column, not the session."""
    return re.sub(r"\bUPDATE\b[^;]*?\bSET\b", "UPDATE", sql, flags=re.IGNORECASE | re.DOTALL)
