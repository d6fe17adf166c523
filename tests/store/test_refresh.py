"""Snapshot refresh on a real Postgres: folding, cursors, tombstones, the lag window."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import asyncpg
from trio_asyncio import aio_as_trio

from seed import change, fetch, insert_rows, mission, update
from store.bounds import RowBounds
from store.refresh import RefreshStats, _refresh, refresh_stream
from store.streams import AGENTS, MISSIONS
from store.sync_schema import V0_6_SCHEMA

AGO = datetime.now(timezone.utc) - timedelta(minutes=10)


def ago(seconds: float) -> datetime:
    return AGO + timedelta(seconds=seconds)


async def snapshot(pool: asyncpg.Pool, mission_id: str) -> asyncpg.Record | None:
    rows = await fetch(pool, "SELECT * FROM mana_ai.mission_snapshots WHERE mission_id = $1", mission_id)
    return rows[0] if rows else None


async def test_fixture_rows_fold_into_the_expected_snapshot(pool: asyncpg.Pool) -> None:
    await insert_rows(
        pool,
        {**mission("m1"), "created_at": ago(0)},
        update("aiMissions", "m1", {"state": "paused", "updatedAt": "2026-04-15T10:00:00.000Z"},
               "2026-04-15T10:00:00.000Z", created_at=ago(1)),
        update("aiMissions", "m1", {"state": "active", "title": "renamed"}, "2026-04-15T07:00:00.000Z",
               created_at=ago(2)),
    )
    stats = await refresh_stream(pool, MISSIONS, lag_s=5)
    assert (stats.rows_read, stats.snapshots_new, stats.snapshots_updated) == (3, 1, 0)
    snap = await snapshot(pool, "m1")
    assert snap is not None
    record = snap["record"]
    assert record["state"] == "paused"  # the older stamp lost
    assert record["title"] == "renamed"  # insert rows carry no stamps, so any update wins
    assert record["__fieldTimestamps"] == {"state": "2026-04-15T10:00:00.000Z",
                                           "updatedAt": "2026-04-15T10:00:00.000Z",
                                           "title": "2026-04-15T07:00:00.000Z"}
    assert snap["last_applied_at"] == ago(2)


async def test_second_refresh_without_new_rows_reads_nothing(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1"), "created_at": ago(0)}, {**mission("m2"), "created_at": ago(1)})
    first = await refresh_stream(pool, MISSIONS, lag_s=5)
    assert first.rows_read == 2
    second = await refresh_stream(pool, MISSIONS, lag_s=5)
    assert (second.rows_read, second.snapshots_new, second.snapshots_updated) == (0, 0, 0)


async def test_deleted_mission_stays_deleted_and_is_not_reread(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1"), "created_at": ago(0)},
                      change("aiMissions", "m1", "delete", {"deletedAt": "2026-04-15T11:00:00.000Z"},
                             created_at=ago(1)))
    await refresh_stream(pool, MISSIONS, lag_s=5)
    snap = await snapshot(pool, "m1")
    assert snap is not None and snap["tombstone"] is True
    assert snap["record"]["deletedAt"] == "2026-04-15T11:00:00.000Z"
    # a later update (even a "re-insert") never resurrects it, and history is not replayed
    await insert_rows(pool, update("aiMissions", "m1", {"state": "active"}, "2026-04-15T12:00:00.000Z",
                                   created_at=ago(2)))
    again = await refresh_stream(pool, MISSIONS, lag_s=5)
    assert again.rows_read == 1
    snap = await snapshot(pool, "m1")
    assert snap is not None and snap["tombstone"] is True
    assert (await refresh_stream(pool, MISSIONS, lag_s=5)).rows_read == 0


async def test_row_committed_late_inside_the_lag_window_is_folded(pool: asyncpg.Pool) -> None:
    now = datetime.now(timezone.utc)
    await insert_rows(pool, {**mission("m1"), "created_at": now - timedelta(seconds=1)},
                      update("aiMissions", "m1", {"title": "B"}, "2026-04-15T10:00:00.000Z",
                             created_at=now - timedelta(milliseconds=500)))
    await refresh_stream(pool, MISSIONS, lag_s=30)
    # a transaction that started before the rows above commits only now
    await insert_rows(pool, update("aiMissions", "m1", {"title": "A", "objective": "late"},
                                   "2026-04-15T09:00:00.000Z", created_at=now - timedelta(milliseconds=800)))
    await refresh_stream(pool, MISSIONS, lag_s=30)
    snap = await snapshot(pool, "m1")
    assert snap is not None
    assert snap["record"]["objective"] == "late"
    assert snap["record"]["title"] == "B"  # LWW by stamp still holds


async def test_agents_stream_and_deleted_at(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**change("agents", "a1", "insert", {"id": "a1", "name": "Cashflow Watcher",
                                                                 "state": "active"}), "created_at": ago(0)})
    stats = await refresh_stream(pool, AGENTS, lag_s=5)
    assert stats.snapshots_new == 1
    rows = await fetch(pool, "SELECT record FROM mana_ai.agent_snapshots WHERE agent_id = 'a1'")
    assert rows[0]["record"]["name"] == "Cashflow Watcher"


async def test_tail_rows_reach_record_only_until_they_pass_the_horizon(pool: asyncpg.Pool) -> None:
    now = datetime.now(timezone.utc)
    await insert_rows(pool, {**mission("m1"), "created_at": ago(0)},
                      update("aiMissions", "m1", {"title": "tail"}, "2026-04-15T10:00:00.000Z",
                             created_at=now - timedelta(seconds=1)))
    stats = await refresh_stream(pool, MISSIONS, lag_s=30)
    assert (stats.rows_read, stats.rows_stabilised) == (2, 1)
    snap = await snapshot(pool, "m1")
    assert snap is not None
    assert snap["record"]["title"] == "tail"  # the effective record folds the tail on top
    assert snap["stable_record"]["title"] == "Wochenreview"  # the stable one does not
    assert snap["last_applied_at"] == now - timedelta(seconds=1)
    # once past the horizon, the row is stable: both records are the same JSON again
    stats = await refresh_stream(pool, MISSIONS, lag_s=0)
    assert (stats.rows_read, stats.rows_stabilised) == (1, 1)
    snap = await snapshot(pool, "m1")
    assert snap is not None
    assert snap["record"] == snap["stable_record"] and snap["record"]["title"] == "tail"
    assert snap["tombstone"] is False and snap["stable_tombstone"] is False


async def test_a_tail_delete_makes_record_a_tombstone_but_not_stable_record(pool: asyncpg.Pool) -> None:
    now = datetime.now(timezone.utc)
    await insert_rows(pool, {**mission("m1"), "created_at": ago(0)},
                      change("aiMissions", "m1", "delete", {"deletedAt": "2026-04-15T11:00:00.000Z"},
                             created_at=now - timedelta(seconds=1)))
    await refresh_stream(pool, MISSIONS, lag_s=30)
    snap = await snapshot(pool, "m1")
    assert snap is not None
    assert (snap["tombstone"], snap["stable_tombstone"]) == (True, False)
    assert "deletedAt" not in snap["stable_record"]


async def _refresh_while_held(pool: asyncpg.Pool) -> RefreshStats:
    """One unit: another transaction holds the missions cursor while we refresh."""
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM mana_ai.refresh_cursors WHERE stream = 'aiMissions' FOR UPDATE")
        return await _refresh(pool, MISSIONS, 5.0, 5000, RowBounds(), V0_6_SCHEMA)


async def test_a_stream_another_instance_is_refreshing_is_skipped(pool: asyncpg.Pool) -> None:
    assert (await refresh_stream(pool, MISSIONS, lag_s=5)).rows_read == 0  # creates the cursor
    await insert_rows(pool, {**mission("m1"), "created_at": ago(0)})
    held: RefreshStats = await aio_as_trio(_refresh_while_held)(pool)
    assert held.skipped and held.rows_read == 0
    assert await snapshot(pool, "m1") is None
    stats = await refresh_stream(pool, MISSIONS, lag_s=5)  # released: read as usual
    assert not stats.skipped and stats.rows_read == 1
