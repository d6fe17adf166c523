"""Spend caps above the agent: per user (MANA_AI_USER_MAX_TOKENS_PER_DAY) and for the whole
deployment (MANA_AI_MAX_TOKENS_PER_DAY), both rolling 24 h windows with reservations."""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest
import trio

from daemon import daemon_settings
from fake_llm import Reply, plan_reply, running_fake_llm
from http_api.app import AppDeps, DatabaseCheck, _health
from observability.metrics import Metrics
from planning import agent_row, planning_runtime, written_rows
from seed import fetch, insert_rows, mission
from store.usage import reserve_tokens

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)


def decisions(metrics: Metrics, decision: str) -> float:
    return metrics.registry.get_sample_value("mana_ai_agent_decisions_total",
                                             {"service": "mana-ai", "decision": decision}) or 0.0


def gauge(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"service": "mana-ai"})


async def spend(pool: asyncpg.Pool, tokens: int, hours_ago: float, *, user: str = "u-9",
                agent: str = "a9") -> None:
    await fetch(pool, "INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, status, prompt_tokens, ts)"
                      " VALUES ($1, $2, 'earlier', 'used', $3, now() - make_interval(secs => $4::float8))"
                      " RETURNING id", user, agent, tokens, hours_ago * 3600)


async def test_parallel_missions_of_one_user_stop_at_the_user_cap(pool: asyncpg.Pool) -> None:
    # three agents without budgets and a legacy mission, all of u-1, all at once; each run
    # reserves ~chars/4 + 1024 tokens (> 1500): the first reservation spends the user's cap
    await insert_rows(pool, *[{**agent_row(f"a{i}", limit=5), "created_at": PAST} for i in range(3)],
                      *[{**mission(f"m{i}{j}", agent_id=f"a{i}"), "created_at": PAST}
                        for i in range(3) for j in range(2)],
                      {**mission("m-legacy"), "created_at": PAST},
                      {**agent_row("b1", user="u-2"), "created_at": PAST},
                      {**mission("m-other", agent_id="b1", user="u-2"), "created_at": PAST})
    metrics = Metrics()
    async with running_fake_llm(Reply(body=plan_reply([]).body, delay_s=0.3)) as llm:
        async with planning_runtime(pool, llm, metrics, user_max_tokens_per_day=1500) as runtime:
            stats = await runtime.snapshots.run_cycle()
    written = sorted(r["record_id"] for r in await written_rows(pool))
    assert len(llm.requests) == 2 and stats.plans_written_back == 2
    assert "m-other" in written  # another user is not held back
    assert decisions(metrics, "skipped-user-budget") == 6
    reserved = await fetch(pool, "SELECT count(*) AS n FROM mana_ai.token_usage WHERE user_id = 'u-1'")
    assert reserved[0]["n"] == 1  # never more than one reservation over the cap


async def test_user_cap_allows_at_most_one_reservation_over(pool: asyncpg.Pool) -> None:
    # straight at the ledger: 20 concurrent reservations of 100 against a cap of 250
    granted: list[int] = []

    async def one(i: int) -> None:
        r = await reserve_tokens(pool, user_id="u-1", agent_id=f"a{i % 4}", mission_id=f"m{i}", estimate=100,
                                 budget=None, user_cap=250, global_cap=None)
        if r.granted:
            granted.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(one, i)
    assert len(granted) == 3  # 0, 100, 200 were below 250; 300 is not


async def test_the_global_cap_pauses_planning_once_and_resumes_by_itself(
        pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    await insert_rows(pool, {**agent_row("a1"), "created_at": PAST},
                      {**mission("m1", agent_id="a1"), "created_at": PAST},
                      {**mission("m2", user="u-2"), "created_at": PAST},
                      {**mission("m3", user="u-3"), "created_at": PAST})
    await spend(pool, 100, hours_ago=23)  # someone else's spend fills the deployment's day
    metrics = Metrics()
    with caplog.at_level(logging.INFO):
        # the run let through uses the whole cap by itself: the others are refused whether they
        # reserve before its usage is recorded (its estimate counts) or after (its usage counts)
        async with running_fake_llm(plan_reply([], prompt_tokens=90, completion_tokens=10)) as llm:
            async with planning_runtime(pool, llm, metrics, max_tokens_per_day=100) as runtime:
                assert runtime.global_budget is not None
                deps = AppDeps(daemon_settings(), metrics, pool, runtime.snapshots, runtime.registry,
                               global_budget=runtime.global_budget.state)
                stats = await runtime.snapshots.run_cycle()
                assert (stats.due_mission_count, stats.plans_produced) == (3, 0) and llm.requests == []
                assert decisions(metrics, "skipped-global-budget") == 3
                await runtime.snapshots.run_cycle()  # still paused: no second warning
                assert decisions(metrics, "skipped-global-budget") == 6
                warnings = [r for r in caplog.records if r.getMessage() == "budget.global_exhausted"]
                assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
                assert gauge(metrics, "mana_ai_global_budget_exhausted") == 1
                assert gauge(metrics, "mana_ai_global_tokens_24h") == 100
                body, ok = await _health(deps, DatabaseCheck(pool))
                _, ok_without = await _health(dataclasses.replace(deps, global_budget=None), DatabaseCheck(pool))
                assert ok == ok_without  # not a readiness failure (this test runs no scanning loop)
                assert body["tokenBudget"] == {"maxTokensPerDay": 100, "used24h": 100, "paused": True}
                # the spend leaves the 24 h window: the next cycle plans again
                await fetch(pool, "UPDATE mana_ai.token_usage SET ts = now() - interval '25 hours' RETURNING id")
                stats = await runtime.snapshots.run_cycle()
                assert stats.plans_written_back == 1  # one reservation over the cap, then paused again
    assert len(llm.requests) == 1 and len(await written_rows(pool)) == 1
    resumed = [r for r in caplog.records if r.getMessage() == "budget.global_resumed"]
    assert len(resumed) == 1
    warnings = [r for r in caplog.records if r.getMessage() == "budget.global_exhausted"]
    assert len(warnings) == 2  # paused again by the run it let through: one line per pause


async def test_unset_caps_take_no_reservation(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**agent_row("a1"), "created_at": PAST},
                      {**mission("m1", agent_id="a1"), "created_at": PAST})
    async with running_fake_llm(plan_reply([])) as llm:
        async with planning_runtime(pool, llm) as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.plans_written_back == 1
    rows = await fetch(pool, "SELECT status FROM mana_ai.token_usage")
    assert [r["status"] for r in rows] == ["used"]  # recorded with the write-back, never reserved
