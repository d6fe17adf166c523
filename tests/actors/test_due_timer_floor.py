"""The due timer has a floor: whatever the data or the clock hold, it fires at most a few times a
second, and each time the floor holds it back is counted."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import asyncpg
import trio

from actors.snapshot import DUE_TIMER_FLOOR_S, SnapshotActor
from daemon import daemon_settings
from observability.metrics import Metrics
from planner import iso_ms
from seed import insert_rows, mission

FROZEN = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"service": "mana-ai", **labels}) or 0.0


async def test_a_due_time_that_never_arrives_on_the_app_clock_does_not_spin_the_timer(pool: asyncpg.Pool) -> None:
    # The app clock stands still a millisecond before the mission's instant: next_wake says "now",
    # the due query says "not yet", on every cycle.
    await insert_rows(pool, {**mission("m1", next_run_at=iso_ms(FROZEN + timedelta(milliseconds=1))),
                             "created_at": FROZEN - timedelta(minutes=5)})
    metrics = Metrics()
    actor = SnapshotActor(pool, daemon_settings(tick_enabled=True, tick_interval_ms=60_000), metrics,
                          clock=lambda: FROZEN)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await trio.sleep(2.0)  # a window to count cycles in
        nursery.cancel_scope.cancel()
    due_timer = sample(metrics, "mana_ai_cycles_total", reason="due-timer")
    assert due_timer <= 2.0 / DUE_TIMER_FLOOR_S + 1, f"{due_timer} due-timer cycles in 2 s"
    assert sample(metrics, "mana_ai_due_timer_floor_hits_total") >= due_timer - 1 >= 1
