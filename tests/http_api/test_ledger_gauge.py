"""`mana_ai_run_ledger_slots` is read after the ledger changed: when a cycle's missions have
settled, and after an operator's retry or discard (one slot, or in bulk), not only when a cycle
dispatches (which showed a slot `running` for an interval after it died)."""

from __future__ import annotations

import asyncpg

from console_seed import KEY, seed_console
from daemon import running_daemon
from fake_llm import completion, running_fake_llm
from seed import insert_rows, mission


def ledger(d: object) -> dict[str, float]:
    metric = d.metric  # type: ignore[attr-defined]
    return {status: metric("mana_ai_run_ledger_slots", status=status) for status in ("running", "backing-off", "dead")}


async def test_a_slot_that_died_in_a_tick_is_counted_dead_when_the_tick_answers(pool: asyncpg.Pool) -> None:
    """The mission's own bad answer on its only attempt: the tick answers once the mission has
    settled, and the gauge says so then (not `running` until the next cycle)."""
    await insert_rows(pool, mission("m-1"))
    async with running_fake_llm(completion("just prose, no plan")) as llm, running_daemon(
            pool, mana_llm_url=llm.url, max_attempts=1) as d:
        stats = (await d.client.post("/internal/tick", headers=KEY)).json()
        assert stats["dueMissionCount"] == 1 and stats["parseFailures"] == 1, stats
        assert ledger(d) == {"running": 0, "backing-off": 0, "dead": 1}


async def test_a_retry_or_discard_of_one_slot_shows_in_the_gauge_at_once(pool: asyncpg.Pool) -> None:
    async with running_daemon(pool) as d:
        await seed_console(pool, d)
        assert ledger(d)["dead"] == 2  # as the seeding cycle saw them
        assert (await d.client.post("/internal/missions/u-1/m-moved/discard", headers=KEY)).status_code == 200
        assert ledger(d)["dead"] == 1  # no cycle ran
        assert (await d.client.post("/internal/missions/u-1/m-dead/retry", headers=KEY)).status_code == 200
        assert ledger(d)["dead"] == 0
