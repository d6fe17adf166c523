"""Retention: the janitor prunes settled run-ledger rows, decrypt-audit rows and rejected rows past
their retention, in small batches off the hot path, and never a row that still matters."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
import trio
from trio_asyncio import aio_as_trio

from actors.janitor import Janitor, retention_of
from daemon import daemon_settings
from observability.metrics import Metrics
from seed import fetch
from store.due import list_due_missions
from store.retention import Retention, prune_batch

SLOT = "2026-01-01T00:00:00.000Z"
DAY = 86_400


async def seed_run(pool: asyncpg.Pool, mission_id: str, status: str, *, slot: str = SLOT, age_days: float,
                   discarded_days: float | None = None, user: str = "u-1") -> None:
    """A ledger row whose times lie `age_days` in the past (finished then, if settled)."""
    await fetch(pool, """
        INSERT INTO mana_ai.mission_runs (user_id, mission_id, due_slot, status, attempts, lease_owner,
               lease_token, lease_expires_at, next_attempt_at, finished_at, discarded_at, created_at, updated_at)
        VALUES ($1, $2, $3, $4, 1,
                CASE WHEN $4 = 'running' THEN 'other' END,
                CASE WHEN $4 = 'running' THEN gen_random_uuid() END,
                CASE WHEN $4 = 'running' THEN now() + interval '5 minutes' END,
                CASE WHEN $4 = 'retry' THEN now() + interval '1 minute' END,
                CASE WHEN $4 IN ('planned', 'dead') THEN now() - make_interval(secs => $5) END,
                now() - make_interval(secs => $6),
                now() - make_interval(secs => $5), now() - make_interval(secs => $5))""",
                user, mission_id, slot, status, age_days * DAY,
                None if discarded_days is None else discarded_days * DAY)
    if discarded_days is None:
        await fetch(pool, "UPDATE mana_ai.mission_runs SET discarded_at = NULL WHERE mission_id = $1", mission_id)


async def seed_snapshot(pool: asyncpg.Pool, mission_id: str, *, next_run_at: str, settled_slot: str | None = None,
                        tombstone: bool = False, user: str = "u-1") -> None:
    record = {"id": mission_id, "state": "active", "nextRunAt": next_run_at, "title": "T"}
    await fetch(pool, "INSERT INTO mana_ai.mission_snapshots (user_id, mission_id, record, settled_slot, tombstone) "
                      "VALUES ($1, $2, $3::jsonb, $4, $5)", user, mission_id, record, settled_slot, tombstone)


async def seed_audit(pool: asyncpg.Pool, n: int, *, age_days: float, user: str = "u-1") -> None:
    await fetch(pool, "INSERT INTO mana_ai.decrypt_audit (user_id, mission_id, iteration_id, table_name, record_id, "
                      "status, ts) SELECT $1, 'm1', 'it-' || i, 'notes', 'n' || i, 'ok', "
                      "now() - make_interval(secs => $3) FROM generate_series(1, $2) i", user, n, age_days * DAY)


async def seed_rejected(pool: asyncpg.Pool, n: int, *, age_days: float) -> None:
    await fetch(pool, "INSERT INTO mana_ai.rejected_rows (change_id, table_name, user_id, record_id, reason, detail, "
                      "row_bytes, changed_at, rejected_at) SELECT gen_random_uuid(), 'aiMissions', 'u-1', 'm' || i, "
                      "'too-deep', 'depth 65 > 64', 10, now() - make_interval(secs => $2), "
                      "now() - make_interval(secs => $2) FROM generate_series(1, $1) i", n, age_days * DAY)


async def mission_ids(pool: asyncpg.Pool) -> set[str]:
    return {r["mission_id"] for r in await fetch(pool, "SELECT mission_id FROM mana_ai.mission_runs")}


async def count(pool: asyncpg.Pool, table: str) -> int:
    [row] = await fetch(pool, f"SELECT count(*) AS n FROM mana_ai.{table}")
    return int(row["n"])


RETENTION = Retention(runs_days=30, dead_runs_days=180, audit_days=400, rejected_days=30)


def janitor(pool: asyncpg.Pool, metrics: Metrics | None = None, retention: Retention = RETENTION,
            **kwargs: Any) -> Janitor:
    return Janitor(pool, retention, metrics or Metrics(), jitter=lambda: 0.5, **kwargs)


# --- what is pruned, what stays -------------------------------------------------------------

async def test_settled_run_rows_past_their_retention_are_pruned_and_every_row_that_matters_stays(
        pool: asyncpg.Pool) -> None:
    # pruned: settled long ago, and no longer any mission's current slot
    await seed_snapshot(pool, "moved-on", next_run_at="2026-02-01T00:00:00.000Z",
                        settled_slot="2026-02-01T00:00:00.000Z")
    await seed_run(pool, "moved-on", "planned", age_days=31)
    await seed_run(pool, "deleted", "planned", age_days=31)               # no snapshot any more
    await seed_snapshot(pool, "tombstoned", next_run_at="2026-02-01T00:00:00.000Z", tombstone=True)
    await seed_run(pool, "tombstoned", "planned", age_days=31)
    await seed_run(pool, "discarded-long-ago", "dead", age_days=60, discarded_days=31)
    await seed_run(pool, "dead-very-long-ago", "dead", age_days=181)
    # kept
    await seed_run(pool, "planned-recently", "planned", age_days=29)
    await seed_snapshot(pool, "current-by-next-run-at", next_run_at=SLOT)  # the device never moved nextRunAt
    await seed_run(pool, "current-by-next-run-at", "planned", age_days=400)
    await seed_snapshot(pool, "current-by-settled-slot", next_run_at="2026-01-01T01:00:00+01:00", settled_slot=SLOT)
    await seed_run(pool, "current-by-settled-slot", "planned", age_days=400)
    await seed_run(pool, "running", "running", age_days=400)
    await seed_run(pool, "retry", "retry", age_days=400)
    await seed_run(pool, "dead-not-discarded", "dead", age_days=179)      # the console still offers Retry
    await seed_snapshot(pool, "dead-current", next_run_at=SLOT, settled_slot=SLOT)
    await seed_run(pool, "dead-current", "dead", age_days=400, discarded_days=300)
    await seed_run(pool, "discarded-recently", "dead", age_days=60, discarded_days=29)

    pruned = await janitor(pool).prune_once()

    assert pruned["mission_runs"] == 5
    assert await mission_ids(pool) == {
        "planned-recently", "current-by-next-run-at", "current-by-settled-slot", "running", "retry",
        "dead-not-discarded", "dead-current", "discarded-recently"}
    # the kept row of a current slot is what stops that slot being planned twice
    due = {d.mission.id for d in await list_due_missions(pool, "2999-01-01T00:00:00.000Z")}
    assert "current-by-next-run-at" not in due and "dead-current" not in due


async def test_audit_and_rejected_rows_past_their_retention_are_pruned(pool: asyncpg.Pool) -> None:
    await seed_audit(pool, 3, age_days=401)
    await seed_audit(pool, 2, age_days=399, user="u-2")
    await seed_rejected(pool, 4, age_days=31)
    await seed_rejected(pool, 1, age_days=29)
    metrics = Metrics()
    pruned = await janitor(pool, metrics).prune_once()
    assert (pruned["decrypt_audit"], pruned["rejected_rows"]) == (3, 4)
    assert (await count(pool, "decrypt_audit"), await count(pool, "rejected_rows")) == (2, 1)
    assert metrics.registry.get_sample_value("mana_ai_retention_pruned_total",
                                             {"service": "mana-ai", "table": "decrypt_audit"}) == 3
    assert metrics.registry.get_sample_value("mana_ai_retention_pruned_total",
                                             {"service": "mana-ai", "table": "rejected_rows"}) == 4


async def test_zero_keeps_forever(pool: asyncpg.Pool) -> None:
    await seed_run(pool, "planned", "planned", age_days=4000)
    await seed_run(pool, "dead", "dead", age_days=4000)
    await seed_run(pool, "discarded", "dead", age_days=4000, discarded_days=4000)
    await seed_audit(pool, 2, age_days=4000)
    await seed_rejected(pool, 2, age_days=4000)
    pruned = await janitor(pool, retention=Retention(0, 0, 0, 0)).prune_once()
    assert pruned == {}
    assert await mission_ids(pool) == {"planned", "dead", "discarded"}
    # only the undiscarded dead slot is kept forever when only its retention is 0
    await janitor(pool, retention=Retention(30, 0, 0, 0)).prune_once()
    assert await mission_ids(pool) == {"dead"}
    assert (await count(pool, "decrypt_audit"), await count(pool, "rejected_rows")) == (2, 2)


def test_the_retention_comes_from_the_settings() -> None:
    assert retention_of(daemon_settings()) == Retention(runs_days=30, dead_runs_days=180, audit_days=400,
                                                        rejected_days=30)
    assert retention_of(daemon_settings(runs_retention_days=7, dead_runs_retention_days=0, audit_retention_days=730,
                                        rejected_retention_days=1)) == Retention(7, 0, 730, 1)


# --- small batches, bounded rounds -----------------------------------------------------------

async def test_one_statement_deletes_at_most_one_batch(pool: asyncpg.Pool) -> None:
    await seed_audit(pool, 25, age_days=500)
    sizes = [await prune_batch(pool, "decrypt_audit", RETENTION, batch=10, timeout_s=5) for _ in range(4)]
    assert sizes == [10, 10, 5, 0]


async def test_a_round_stops_after_its_time_budget_and_the_next_one_goes_on(pool: asyncpg.Pool) -> None:
    await seed_audit(pool, 25, age_days=500)
    sweeper = janitor(pool, batch=10, round_budget_s=0)  # the budget is spent after the first batch
    assert (await sweeper.prune_once())["decrypt_audit"] == 10
    assert await count(pool, "decrypt_audit") == 15
    assert (await sweeper.prune_once())["decrypt_audit"] == 10
    whole = janitor(pool, batch=10)
    assert (await whole.prune_once())["decrypt_audit"] == 5


# --- failures stay inside the round ------------------------------------------------------------

@asynccontextmanager
async def table_locked(pool: asyncpg.Pool, table: str) -> AsyncIterator[None]:
    """Another session holds `table` in ACCESS EXCLUSIVE mode until the block ends."""
    conn = await aio_as_trio(pool.acquire)()
    tx = conn.transaction()
    try:
        await aio_as_trio(tx.start)()
        await aio_as_trio(conn.execute)(f"LOCK TABLE mana_ai.{table} IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        await aio_as_trio(tx.rollback)()
        await aio_as_trio(pool.release)(conn)


async def test_a_database_error_ends_the_round_for_that_table_not_the_janitor(
        pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    await seed_audit(pool, 3, age_days=500)
    await seed_rejected(pool, 2, age_days=500)
    metrics = Metrics()
    sweeper = janitor(pool, metrics, timeout_s=0.3, interval_s=0.01)
    with caplog.at_level(logging.INFO, logger="actors.janitor"):
        async with trio.open_nursery() as nursery:
            async with table_locked(pool, "decrypt_audit"):
                await nursery.start(sweeper.run)
                with trio.fail_after(20):
                    await sweeper.wait_rounds(1)
                first = sweeper.stats()
            with trio.fail_after(20):
                await sweeper.wait_rounds(first.rounds + 1)  # the lock is gone: the next round prunes
            nursery.cancel_scope.cancel()
    assert first.errors == 1 and first.pruned["rejected_rows"] == 2  # the other table was pruned all the same
    assert await count(pool, "decrypt_audit") == 0
    assert metrics.registry.get_sample_value("mana_ai_retention_errors_total",
                                             {"service": "mana-ai", "table": "decrypt_audit"}) == 1
    failed = [r for r in caplog.records if r.getMessage() == "retention.prune_failed"]
    assert len(failed) == 1 and failed[0].table == "decrypt_audit"  # type: ignore[attr-defined]
    assert "lock timeout" in failed[0].error or "statement timeout" in failed[0].error  # type: ignore[attr-defined]
    pruned_lines = [r for r in caplog.records if r.getMessage() == "retention.pruned"]
    assert {(r.table, r.rows) for r in pruned_lines} == {  # type: ignore[attr-defined]
        ("rejected_rows", 2), ("decrypt_audit", 3)}


@asynccontextmanager
async def row_locked(pool: asyncpg.Pool, mission_id: str) -> AsyncIterator[None]:
    """Another session holds the ledger rows of `mission_id` (FOR UPDATE) until the block ends."""
    conn = await aio_as_trio(pool.acquire)()
    tx = conn.transaction()
    try:
        await aio_as_trio(tx.start)()
        await aio_as_trio(conn.execute)("SELECT 1 FROM mana_ai.mission_runs WHERE mission_id = $1 FOR UPDATE",
                                        mission_id)
        yield
    finally:
        await aio_as_trio(tx.rollback)()
        await aio_as_trio(pool.release)(conn)


async def test_rows_another_session_holds_are_skipped_never_waited_for(pool: asyncpg.Pool) -> None:
    await seed_run(pool, "held", "planned", age_days=40)
    await seed_run(pool, "free", "planned", age_days=40)
    sweeper = janitor(pool, timeout_s=10)
    async with row_locked(pool, "held"):
        with trio.fail_after(5):  # far below the statement's own timeout: it did not wait
            assert (await sweeper.prune_once())["mission_runs"] == 1
    assert await mission_ids(pool) == {"held"}
    assert (await sweeper.prune_once())["mission_runs"] == 1  # its turn comes in a later round
    assert await mission_ids(pool) == set()


def test_the_metrics_know_every_table_with_a_retention() -> None:
    from observability.metrics import RETENTION_TABLES as METRIC_TABLES
    from store.retention import RETENTION_TABLES

    assert METRIC_TABLES == RETENTION_TABLES
