"""The rolling 24 h token budget: enforced before the LLM call, without races, aging out."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import asyncpg

from fake_llm import Reply, plan_reply, running_fake_llm
from observability.metrics import Metrics
from planning import CREATE_TASK, agent_row, ledger, planning_runtime, written_rows
from seed import fetch, insert_rows, mission
from store.usage import prune_usage, usage_24h

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)


def decisions(metrics: Metrics, decision: str) -> float:
    return metrics.registry.get_sample_value("mana_ai_agent_decisions_total",
                                             {"service": "mana-ai", "decision": decision}) or 0.0


async def spend(pool: asyncpg.Pool, tokens: int, hours_ago: float, agent: str = "a1") -> None:
    await fetch(pool, "INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, status, prompt_tokens, ts)"
                      " VALUES ('u-1', $1, 'earlier', 'used', $2, now() - make_interval(secs => $3::float8))"
                      " RETURNING id", agent, tokens, hours_ago * 3600)


async def test_budget_reached_skips_without_llm_call_and_resumes_when_usage_ages_out(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**agent_row("a1", maxTokensPerDay=100), "created_at": PAST},
                      {**mission("m1", agent_id="a1"), "created_at": PAST})
    await spend(pool, 100, hours_ago=23)
    metrics = Metrics()
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, metrics) as runtime:
            stats = await runtime.snapshots.run_cycle()
            assert (stats.due_mission_count, stats.plans_produced, stats.errors) == (1, 0, [])
            assert llm.requests == [] and decisions(metrics, "skipped-budget") == 1
            [run] = await ledger(pool, "m1")
            assert (run["status"], run["attempts"]) == ("retry", 0)  # still due, no attempt used
            # time passes in the ledger: the spend leaves the 24 h window
            await fetch(pool, "UPDATE mana_ai.token_usage SET ts = now() - interval '25 hours' RETURNING id")
            stats = await runtime.snapshots.run_cycle()
    assert stats.plans_written_back == 1 and len(llm.requests) == 1
    [row] = await written_rows(pool)
    usage = await fetch(pool, "SELECT status, prompt_tokens, completion_tokens, iteration_id FROM mana_ai.token_usage"
                              " WHERE mission_id = 'm1'")
    assert [tuple(u) for u in usage] == [("used", 11, 7, row["data"]["iterations"][0]["id"])]
    assert metrics.registry.get_sample_value("mana_ai_tokens_used_total",
                                             {"service": "mana-ai", "agent_id": "a1"}) == 18


async def test_concurrent_runs_cannot_race_past_the_budget(pool: asyncpg.Pool) -> None:
    # each run reserves ~chars/4 + 1024 tokens (> 1500): the first reservation spends the budget
    await insert_rows(pool, {**agent_row("a1", limit=5, maxTokensPerDay=1500), "created_at": PAST},
                      *[{**mission(f"m{i}", agent_id="a1"), "created_at": PAST} for i in range(3)])
    metrics = Metrics()
    async with running_fake_llm(Reply(body=plan_reply([]).body, delay_s=0.3)) as llm:
        async with planning_runtime(pool, llm, metrics) as runtime:
            stats = await runtime.snapshots.run_cycle()
            assert stats.plans_written_back == 1 and len(llm.requests) == 1
            assert decisions(metrics, "skipped-budget") == 2
            # settled at the reported 18 tokens: the next cycle may spend again
            usage = await usage_24h(pool, "u-1", "a1")
            assert (usage.used, usage.settled, usage.reservations) == (18, 18, 0)
            stats = await runtime.snapshots.run_cycle()
            assert stats.plans_written_back == 1


async def test_zero_blocks_absent_or_non_numeric_is_unlimited(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**agent_row("zero", maxTokensPerDay=0), "created_at": PAST},
                      {**agent_row("none"), "created_at": PAST},
                      {**agent_row("text", maxTokensPerDay="lots"), "created_at": PAST},
                      {**mission("m-zero", agent_id="zero"), "created_at": PAST},
                      {**mission("m-none", agent_id="none"), "created_at": PAST},
                      {**mission("m-text", agent_id="text"), "created_at": PAST})
    await spend(pool, 10**9, hours_ago=1, agent="none")
    async with running_fake_llm(plan_reply([])) as llm:
        async with planning_runtime(pool, llm) as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.plans_written_back == 2
    assert sorted(r["record_id"] for r in await written_rows(pool)) == ["m-none", "m-text"]


async def test_a_failed_call_releases_its_reservation(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**agent_row("a1", maxTokensPerDay=5000), "created_at": PAST},
                      {**mission("m1", agent_id="a1"), "created_at": PAST})
    async with running_fake_llm(Reply(status=400, body="no")) as llm:
        async with planning_runtime(pool, llm) as runtime:
            await runtime.snapshots.run_cycle()
    rows = await fetch(pool, "SELECT status, reserved_tokens FROM mana_ai.token_usage")
    assert [tuple(r) for r in rows] == [("released", 0)]
    assert (await usage_24h(pool, "u-1", "a1")).used == 0


async def test_old_usage_is_pruned_in_batches(pool: asyncpg.Pool) -> None:
    for _ in range(25):
        await spend(pool, 1, hours_ago=49)
    await spend(pool, 1, hours_ago=47)
    assert await prune_usage(pool, retention_h=48, batch=10) == 25
    assert len(await fetch(pool, "SELECT id FROM mana_ai.token_usage")) == 1
