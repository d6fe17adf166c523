"""One lock order for every statement that locks several `mission_runs` rows: the primary key.

Two such statements locking the same rows in different orders deadlock under the right
interleaving, and Postgres then fails one of them (a renewal, or a whole claim). The
interleaving is forced here with two blocking transactions and real statements on a real
Postgres; with one order for all, the statements only wait for each other.
"""

from __future__ import annotations

from datetime import datetime, timezone
from uuid import UUID, uuid4

import asyncpg
import trio
from trio_asyncio import aio_as_trio

from seed import fetch
from store.due import DueMission
from store.records import Mission
from store.runs import Claim, claim_runs, release_claims, renew_leases

SLOT = "2026-01-01T00:00:00.000Z"


def claim(mission_id: str, token: UUID) -> Claim:
    return Claim("u-1", mission_id, SLOT, token, 1)


def due(mission_id: str) -> DueMission:
    record = {"id": mission_id, "state": "active", "nextRunAt": SLOT}
    return DueMission(Mission.from_record("u-1", record), record, datetime.now(timezone.utc))


async def _open(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn)


async def _lock(conn: asyncpg.Connection, mission_id: str) -> int:
    await conn.execute("BEGIN")
    await conn.execute("SELECT 1 FROM mana_ai.mission_runs WHERE mission_id = $1 FOR UPDATE", mission_id)
    return int(await conn.fetchval("SELECT pg_backend_pid()"))


async def _blocked(monitor: asyncpg.Connection, statement: str, not_by: int) -> int | None:
    """The pid of the backend running `statement` while something other than `not_by` blocks it."""
    pid: int | None = await monitor.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid() "
        "AND cardinality(pg_blocking_pids(pid)) > 0 AND NOT ($2 = ANY(pg_blocking_pids(pid)))",
        statement, not_by)
    return pid


async def wait_blocked(monitor: asyncpg.Connection, statement: str, *, not_by: int = 0) -> None:
    with trio.fail_after(10):
        while await aio_as_trio(_blocked)(monitor, statement, not_by) is None:
            await trio.sleep(0.01)


RENEW = "SET lease_expires_at = now() + make_interval"  # renew_leases
CLAIM = "INSERT INTO mana_ai.mission_runs AS r"  # claim_runs


async def _running(pool: asyncpg.Pool, tokens: dict[str, UUID]) -> None:
    async with pool.acquire() as conn:
        for mission_id, token in tokens.items():  # "mz" is stored first: a scan meets it first
            await conn.execute(
                "INSERT INTO mana_ai.mission_runs (user_id, mission_id, due_slot, status, attempts, lease_owner, "
                "lease_token, lease_expires_at) VALUES ('u-1', $1, $2, 'running', 1, 'other', $3, "
                "now() + interval '1 hour')", mission_id, SLOT, token)


async def test_renewals_and_claims_of_the_same_rows_never_deadlock(aio_loop: object, pool: asyncpg.Pool,
                                                                   db_dsn: str) -> None:
    """The renewal is handed its claims in the order they were taken ("mz" before "ma"), the claim
    its due missions oldest first ("ma" before "mz"). Two transactions hold "mz" and "ma"; they let
    go of "ma" first, then of "mz". Locking in the order given, the claim takes "ma" and waits for
    "mz" while the renewal holds "mz" and waits for "ma": deadlock_detected, and the renewal (or
    the claim) fails. In primary-key order both take "ma" first: one waits for the other."""
    tokens = {"mz": uuid4(), "ma": uuid4()}
    await aio_as_trio(_running)(pool, tokens)
    hold_mz, hold_ma, monitor = [await aio_as_trio(_open)(db_dsn) for _ in range(3)]
    results: dict[str, object] = {}

    async def renew() -> None:
        try:
            results["renew"] = await renew_leases(pool, [claim(m, tokens[m]) for m in ("mz", "ma")], 60)
        except asyncpg.PostgresError as exc:
            results["renew"] = exc

    async def take() -> None:
        try:
            results["claim"] = await claim_runs(pool, [due("ma"), due("mz")], instance_id="me", lease_s=60)
        except asyncpg.PostgresError as exc:
            results["claim"] = exc

    try:
        await aio_as_trio(_lock)(hold_mz, "mz")
        ma_pid = await aio_as_trio(_lock)(hold_ma, "ma")
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(renew)
                await wait_blocked(monitor, RENEW)
                nursery.start_soon(take)
                await wait_blocked(monitor, CLAIM)
                await aio_as_trio(hold_ma.execute)("COMMIT")
                await wait_blocked(monitor, CLAIM, not_by=ma_pid)  # now waiting for the other row (or the renewal)
                await aio_as_trio(hold_mz.execute)("COMMIT")
    finally:
        for conn in (hold_mz, hold_ma, monitor):
            await aio_as_trio(conn.close)()
    assert results == {"renew": set(tokens.values()), "claim": []}


async def test_release_claims_locks_in_primary_key_order_too(aio_loop: object, pool: asyncpg.Pool) -> None:
    """The batch hand-back of a failed cycle takes the same order (and is fenced by the tokens)."""
    tokens = {"mz": uuid4(), "ma": uuid4()}
    await aio_as_trio(_running)(pool, tokens)
    released = await release_claims(pool, [claim("mz", tokens["mz"]), claim("ma", uuid4())], "cycle-failed")
    assert released == 1
    rows = await fetch(pool, "SELECT mission_id, status, attempts FROM mana_ai.mission_runs ORDER BY mission_id")
    assert [tuple(r) for r in rows] == [("ma", "running", 1), ("mz", "retry", 0)]
