"""Due-time wake-ups: a mission whose nextRunAt arrives is planned within about a second."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import asyncpg
import trio

from actors.snapshot import SnapshotActor
from daemon import daemon_settings
from fake_llm import Reply, plan_reply, running_fake_llm
from observability.metrics import Metrics
from planner import iso_ms
from planning import CREATE_TASK, planning_runtime, written_rows
from seed import insert_rows, mission

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)


def cycles(metrics: Metrics, reason: str) -> float:
    return metrics.registry.get_sample_value("mana_ai_cycles_total", {"service": "mana-ai", "reason": reason}) or 0.0


async def test_the_due_time_timer_plans_a_mission_without_waiting_for_the_interval(pool: asyncpg.Pool) -> None:
    soon = datetime.now(timezone.utc) + timedelta(seconds=1.5)
    await insert_rows(pool, {**mission("m1", next_run_at=iso_ms(soon)), "created_at": PAST})
    metrics = Metrics()
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, metrics, tick_enabled=True, tick_interval_ms=60_000) as runtime:
            async with trio.open_nursery() as nursery:
                await nursery.start(runtime.snapshots.run)
                with trio.fail_after(10):
                    while not await written_rows(pool):
                        await trio.sleep(0.05)
                written_at = datetime.now(timezone.utc)
                nursery.cancel_scope.cancel()
    assert (written_at - soon).total_seconds() < 1.0
    assert cycles(metrics, "due-timer") >= 1 and cycles(metrics, "interval") == 1  # only the first, at start


async def test_hints_wake_the_actor_only_with_the_scheduler_on(pool: asyncpg.Pool) -> None:
    metrics = Metrics()
    off = SnapshotActor(pool, daemon_settings(tick_enabled=False), metrics)
    async with trio.open_nursery() as nursery:
        await nursery.start(off.run)
        off.hint("test")
        await trio.sleep(0.3)
        assert off.state().cycles_completed == 0
        nursery.cancel_scope.cancel()
    on = SnapshotActor(pool, daemon_settings(tick_enabled=True, tick_interval_ms=60_000), metrics)
    async with trio.open_nursery() as nursery:
        await nursery.start(on.run)
        with trio.fail_after(5):
            while on.state().cycles_completed < 1:
                await trio.sleep(0.02)
        on.hint("test")
        with trio.fail_after(5):
            while on.state().cycles_completed < 2:
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    assert cycles(metrics, "notify") == 1


async def test_a_retry_after_the_cycle_computed_its_wake_up_runs_at_its_own_time(pool: asyncpg.Pool) -> None:
    """The first cycle's wake-up is computed while the mission's LLM call is still in flight (its
    lease then is the earliest thing ahead); the call fails after that, and the slot's retry is
    due about a second later. Before, the due timer did not know: the retry waited for the
    60 s interval (or the lease). Now the failed run tells the timer."""
    await insert_rows(pool, {**mission("m1"), "created_at": PAST})
    metrics = Metrics()
    async with running_fake_llm(Reply(status=500, delay_s=1.0), plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, metrics, tick_enabled=True, tick_interval_ms=60_000,
                                    llm_retries=0, retry_base_s=1.0) as runtime:
            async with trio.open_nursery() as nursery:
                await nursery.start(runtime.snapshots.run)
                with trio.fail_after(15):
                    while not await written_rows(pool):
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
    assert len(llm.requests) == 2
    assert cycles(metrics, "interval") == 1 and cycles(metrics, "due-timer") >= 1
