"""The snapshot actor: scheduling, joining requests, and surviving malformed rows."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest
import trio

from actors.snapshot import SnapshotActor
from daemon import daemon_settings
from observability.metrics import Metrics
from seed import change, fetch, insert_rows, mission, update

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"service": "mana-ai", **labels}) or 0.0


async def test_malformed_rows_are_logged_counted_and_skipped(pool: asyncpg.Pool,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    await insert_rows(
        pool,
        {**mission("good"), "created_at": PAST},
        {**change("aiMissions", "list-data", "insert", [1, 2, 3]), "created_at": PAST},
        {**change("aiMissions", "string-data", "insert", "hello"), "created_at": PAST},
        {**mission("numeric-next-run", nextRunAt=12345), "created_at": PAST},
        {**mission("iterations-string", iterations="oops"), "created_at": PAST},
        {**mission("bad-stamps"), "created_at": PAST},
        {**change("aiMissions", "bad-stamps", "update", {"title": "x"}), "field_timestamps": [1, 2],
         "created_at": PAST + timedelta(seconds=1)},
        {**change("agents", "agent-1", "insert", {"id": "agent-1", "policy": [], "maxConcurrentMissions": "two"}),
         "created_at": PAST},
    )
    metrics = Metrics()
    actor = SnapshotActor(pool, daemon_settings(), metrics)
    with caplog.at_level(logging.WARNING):
        stats = await actor.run_cycle()
    assert stats.errors == []
    # good, iterations-string (coerced to []) and bad-stamps are due; numeric-next-run is not
    assert stats.due_mission_count == 3
    rejected = {(r.table, r.kind, r.record) for r in caplog.records if r.getMessage() == "sync_row.malformed"}  # type: ignore[attr-defined]
    assert ("aiMissions", "data-not-object", "list-data") in rejected
    assert ("aiMissions", "data-not-object", "string-data") in rejected
    assert ("aiMissions", "bad-field-timestamps", "bad-stamps") in rejected
    assert ("aiMissions", "bad-field", "numeric-next-run") in rejected
    assert ("aiMissions", "bad-field", "iterations-string") in rejected
    assert ("agents", "bad-field", "agent-1") in rejected
    for record in caplog.records:
        if record.getMessage() == "sync_row.malformed":
            assert record.user == "u-1"  # type: ignore[attr-defined]
    assert sample(metrics, "mana_ai_sync_rows_rejected_total", table="aiMissions", kind="data-not-object") == 2
    snaps = await fetch(pool, "SELECT mission_id, record FROM mana_ai.mission_snapshots ORDER BY mission_id")
    by_id = {r["mission_id"]: r["record"] for r in snaps}
    assert "list-data" not in by_id and "string-data" not in by_id
    assert by_id["bad-stamps"]["title"] == "x"  # the update still applied, stamped by created_at
    # reported once: a second cycle over the same (stable) rows says nothing
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        await actor.run_cycle()
    assert not [r for r in caplog.records if r.getMessage() == "sync_row.malformed"]


async def test_interval_runs_cycles_on_its_own(pool: asyncpg.Pool) -> None:
    metrics = Metrics()
    actor = SnapshotActor(pool, daemon_settings(tick_enabled=True, tick_interval_ms=100), metrics)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        with trio.fail_after(10):
            while actor.state().cycles_completed < 3:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert not actor.state().alive


async def test_disabled_scheduler_runs_only_requested_cycles(pool: asyncpg.Pool) -> None:
    actor = SnapshotActor(pool, daemon_settings(tick_enabled=False, tick_interval_ms=100), Metrics())
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await trio.sleep(0.5)
        assert actor.state().cycles_completed == 0
        stats = await actor.request_cycle().wait()
        assert stats.errors == [] and actor.state().cycles_completed == 1
        nursery.cancel_scope.cancel()


async def test_requests_during_a_cycle_join_it(pool: asyncpg.Pool) -> None:
    actor = SnapshotActor(pool, daemon_settings(), Metrics())
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        first = actor.request_cycle()
        assert actor.request_cycle() is first  # pending: shared
        await first.wait()
        second = actor.request_cycle()
        assert second is not first
        await second.wait()
        assert actor.state().cycles_completed == 2
        nursery.cancel_scope.cancel()


async def test_a_late_update_moves_a_mission_out_of_due(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1"), "created_at": PAST})
    actor = SnapshotActor(pool, daemon_settings(), Metrics())
    assert (await actor.run_cycle()).due_mission_count == 1
    await insert_rows(pool, update("aiMissions", "m1", {"state": "paused"}, "2026-04-15T10:00:00.000Z"))
    assert (await actor.run_cycle()).due_mission_count == 0
