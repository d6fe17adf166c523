"""A cycle refreshes missions page by page and dispatches between pages: the first missions go
out while later pages are still folding, and still every mission is planned exactly once."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
import trio
from trio_asyncio import aio_as_trio, trio_as_aio

from actors.snapshot import SnapshotActor
from daemon import daemon_settings
from fake_llm import Reply, plan_reply, running_fake_llm
from observability.metrics import Metrics
from planning import CREATE_TASK, agent_row, planning_runtime, written_rows
from seed import fetch, insert_rows, mission, update
from store.refresh import refresh_stream
from store.streams import AGENTS, MISSIONS

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)
MISSIONS_DUE = 40  # more than the first page (32 rows)


def refresh_stages(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("mana_ai_stage_duration_seconds_count",
                                              {"service": "mana-ai", "stage": "refresh"})
    return value or 0.0


async def _hold_row_lock(pool: asyncpg.Pool, mission_id: str, locked: trio.Event, release: trio.Event) -> None:
    """One unit: lock a mission's snapshot row until `release` (a refresh writing it waits)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM mana_ai.mission_snapshots WHERE mission_id = $1 FOR UPDATE", mission_id)
        locked.set()
        await trio_as_aio(release.wait)()


async def test_the_first_page_is_planned_while_a_later_page_is_still_folding(pool: asyncpg.Pool) -> None:
    # "late" exists before the cycle; its next row (it is paused) lands in the second page
    await insert_rows(pool, {**agent_row("a1"), "created_at": PAST}, {**mission("late", agent_id="a1"),
                                                                       "created_at": PAST})
    await refresh_stream(pool, MISSIONS, lag_s=0)
    await refresh_stream(pool, AGENTS, lag_s=0)
    start = PAST + timedelta(seconds=1)
    await insert_rows(
        pool,
        # a new agent, in the same batch as its missions: they must go out with it, never as legacy
        {**agent_row("a2", name="Neu", limit=8), "created_at": start + timedelta(seconds=1)},
        *[{**mission(f"m{i:02d}", agent_id="a2"), "created_at": start + timedelta(milliseconds=i)}
          for i in range(MISSIONS_DUE)],
        update("aiMissions", "late", {"state": "paused"}, "2026-04-16T00:00:00.000Z",
               created_at=start + timedelta(milliseconds=35.5)))
    metrics = Metrics()
    refreshes_at_first_request: list[float] = []
    locked, release = trio.Event(), trio.Event()

    def responder(body: dict[str, Any]) -> Reply:
        if not refreshes_at_first_request:
            refreshes_at_first_request.append(refresh_stages(metrics))
        release.set()  # the second page may now write "late": the refresh can end
        return plan_reply([CREATE_TASK])

    async with running_fake_llm() as llm:
        llm.responder = responder
        async with planning_runtime(pool, llm, metrics, mailbox_size=64) as runtime:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(aio_as_trio(_hold_row_lock), pool, "late", locked, release)
                await locked.wait()
                # a cycle that planned only after its whole refresh would wait here for ever
                with trio.fail_after(30):
                    stats = await runtime.snapshots.run_cycle()
    assert stats.as_json() | {"scannedAt": None} == {
        "scannedAt": None, "dueMissionCount": MISSIONS_DUE, "plansProduced": MISSIONS_DUE,
        "plansWrittenBack": MISSIONS_DUE, "parseFailures": 0, "errors": []}
    # when the first request came, the agents and the first page were folded, not the rest
    assert refreshes_at_first_request == [2.0]
    assert refresh_stages(metrics) == 3  # agents, and the 41 mission rows in pages of 32 and 9 (of 128)
    rows = await written_rows(pool)
    assert sorted(r["record_id"] for r in rows) == [f"m{i:02d}" for i in range(MISSIONS_DUE)]  # each once
    assert {(r["actor"]["principalId"], r["actor"]["displayName"]) for r in rows} == {("a2", "Neu")}
    assert not [b for b in llm.requests if "late" in str(b)]  # paused in a later page: never planned
    runs = await fetch(pool, "SELECT mission_id, status, attempts FROM mana_ai.mission_runs ORDER BY mission_id")
    assert [tuple(r) for r in runs] == [(f"m{i:02d}", "planned", 1) for i in range(MISSIONS_DUE)]


async def test_the_dispatch_limit_counts_over_all_passes(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, *[{**mission(f"m{i:02d}", next_run_at=f"2026-04-15T09:00:{i:02d}.000Z"),
                               "created_at": PAST + timedelta(milliseconds=i)} for i in range(MISSIONS_DUE)])
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, dispatch_limit=36) as runtime:
            batch, _ = await runtime.snapshots.start_cycle()
            stats = await batch.wait()
            assert batch.truncated  # more was due: the next cycle follows when these are done
            assert stats.due_mission_count == 36
            stats = await runtime.snapshots.run_cycle()
            assert stats.due_mission_count == 4
    rows = await written_rows(pool)
    assert sorted(r["record_id"] for r in rows) == [f"m{i:02d}" for i in range(MISSIONS_DUE)]


async def test_rows_rejected_by_a_committed_page_are_reported_when_a_later_page_fails(
        pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    await insert_rows(pool, {**mission("late"), "created_at": PAST})
    await refresh_stream(pool, MISSIONS, lag_s=0)
    start = PAST + timedelta(seconds=1)
    await insert_rows(pool, *[{**mission(f"m{i:02d}"), "created_at": start + timedelta(milliseconds=i)}
                              for i in range(MISSIONS_DUE)],
                      {**mission("x" * 300), "created_at": start + timedelta(milliseconds=4.5)},  # id too long
                      update("aiMissions", "late", {"state": "paused"}, "2026-04-16T00:00:00.000Z",
                             created_at=start + timedelta(milliseconds=35.5)))
    metrics = Metrics()
    actor = SnapshotActor(pool, daemon_settings(cycle_timeout_s=1), metrics)
    locked, release = trio.Event(), trio.Event()
    with caplog.at_level(logging.WARNING):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(aio_as_trio(_hold_row_lock), pool, "late", locked, release)
            await locked.wait()
            stats = await actor.run_cycle()  # the second page waits for the lock: the cycle times out
            release.set()
    assert stats.errors == ["cycle timed out after 1s"]
    rejected = [r for r in caplog.records if r.getMessage() == "sync_row.rejected"]
    assert [(r.reason, r.record) for r in rejected] == [("id-too-long", "x" * 64 + "…")]  # type: ignore[attr-defined]
    assert metrics.registry.get_sample_value("mana_ai_rows_rejected_total",
                                             {"service": "mana-ai", "reason": "id-too-long"}) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        stats = await actor.run_cycle()  # the rest: nothing reported twice
    assert stats.errors == [] and stats.due_mission_count == MISSIONS_DUE
    assert not [r for r in caplog.records if r.getMessage() == "sync_row.rejected"]
