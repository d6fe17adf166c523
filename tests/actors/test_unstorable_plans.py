"""Plans Postgres cannot store, or that the refresh would reject once written, never reach
`sync_changes` and never harm a mission planned beside them (the LLM is a real loopback server)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
import trio

from fake_llm import Reply, call, per_round, plan_reply, running_fake_llm, tool_turn
from observability.metrics import ROW_REJECT_REASONS, Metrics
from planning import CREATE_TASK, ledger, planning_runtime, written_rows
from seed import fetch, insert_rows, mission

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)
MISSIONS = 12
POISON = {"poison-nul": "Notiz\u0000mit NUL", "poison-surrogate": "halb \ud800 Paar"}


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"service": "mana-ai", **labels}) or 0.0


def rejected_rows(metrics: Metrics) -> dict[str, float]:
    return {r: sample(metrics, "mana_ai_rows_rejected_total", reason=r) for r in ROW_REJECT_REASONS
            if sample(metrics, "mana_ai_rows_rejected_total", reason=r)}


async def snapshot_iterations(pool: asyncpg.Pool, mission_id: str) -> list[Any]:
    [row] = await fetch(pool, "SELECT record FROM mana_ai.mission_snapshots WHERE mission_id = $1", mission_id)
    iterations: list[Any] = row["record"]["iterations"]
    return iterations


async def test_unstorable_answers_fail_alone_and_every_mission_answered_with_them_is_planned(
        pool: asyncpg.Pool) -> None:
    """Twelve missions of twelve users answered at the same moment (their write-backs share a
    statement); two answers hold a NUL and a lone surrogate, which `jsonb` cannot store."""
    titles = [f"innocent-{i:02d}" for i in range(MISSIONS - len(POISON))] + list(POISON)
    await insert_rows(pool, *[{**mission(f"m{i:02d}", user=f"u-{i:02d}", agent_id=None, title=title),
                               "created_at": PAST} for i, title in enumerate(titles)])
    poisoned = {f"m{i:02d}" for i, title in enumerate(titles) if title in POISON}
    metrics = Metrics()
    async with running_fake_llm() as llm:
        gate = trio.Event()
        llm.gate = gate

        def responder(body: dict[str, Any]) -> Reply:
            if len(llm.requests) == MISSIONS:  # every mission asked: all answers go out together
                gate.set()
            prompt = body["messages"][-1]["content"]
            for title, text in POISON.items():
                if title in prompt:
                    return plan_reply([{**CREATE_TASK, "params": {"title": text}}])
            return plan_reply([CREATE_TASK])

        llm.responder = responder
        async with planning_runtime(pool, llm, metrics, llm_concurrency=MISSIONS + 4) as runtime:
            with trio.fail_after(60):
                stats = await runtime.snapshots.run_cycle()
    assert len(llm.requests) == MISSIONS  # one call each: nothing was asked twice
    runs = {r["mission_id"]: r for r in await fetch(pool, "SELECT * FROM mana_ai.mission_runs")}
    innocents = sorted(set(runs) - poisoned)
    assert {m: (runs[m]["status"], runs[m]["last_error"]) for m in innocents} == {
        m: ("planned", None) for m in innocents}
    assert sorted(r["record_id"] for r in await written_rows(pool)) == innocents
    assert (stats.plans_written_back, stats.parse_failures) == (MISSIONS - 2, 2)
    assert sample(metrics, "mana_ai_parse_failures_total") == 2
    for mission_id in poisoned:
        assert (runs[mission_id]["status"], runs[mission_id]["outcome"]) == ("retry", "parse-failed")
        assert "cannot be stored" in runs[mission_id]["last_error"]
        assert "(bad-unicode)" in runs[mission_id]["last_error"]


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(("params", "reason"), [
    ({"title": "x" * 70_000}, "string-too-long"),
    (nested(60), "too-deep"),  # 60 levels of params sit 66 deep in the written row
    ({"title": "Foo", "n": int("9" * 400)}, "number-out-of-range"),
], ids=["70000-chars", "nested-60", "400-digits"])
async def test_a_plan_the_refresh_would_reject_is_a_parse_failure_and_earlier_iterations_stay(
        pool: asyncpg.Pool, params: dict[str, Any], reason: str) -> None:
    device_iteration = {"id": "it-device", "summary": "vom Gerät", "plan": []}
    await insert_rows(pool, {**mission("m1", agent_id=None, iterations=[device_iteration]), "created_at": PAST})
    metrics = Metrics()
    async with running_fake_llm(plan_reply([{**CREATE_TASK, "params": params}]), plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, metrics) as runtime:
            first = await runtime.snapshots.run_cycle()
            second = await runtime.snapshots.run_cycle()  # the retry (no backoff here): a good answer
            third = await runtime.snapshots.run_cycle()   # reads the write-back back
    assert (first.parse_failures, first.plans_written_back) == (1, 0)
    assert sample(metrics, "mana_ai_parse_failures_total") == 1
    [run] = await ledger(pool, "m1")
    [failed] = run["error_history"]
    assert failed["outcome"] == "parse-failed" and failed["error"].startswith("step[0].params cannot be stored: ")
    assert failed["error"].endswith(f"({reason})")
    assert (second.plans_written_back, third.due_mission_count, third.errors) == (1, 0, [])
    [row] = await written_rows(pool, "m1")
    iterations = await snapshot_iterations(pool, "m1")
    assert iterations == row["data"]["iterations"]  # the refresh took the row as written
    assert [it["id"] for it in iterations][:1] == ["it-device"] and len(iterations) == 2
    assert iterations[1]["plan"][0]["intent"]["params"] == {"title": "Foo"}
    assert rejected_rows(metrics) == {}


async def test_a_write_back_past_the_row_bound_is_refused_and_counted(pool: asyncpg.Pool) -> None:
    """The plan is fine on its own, but the mission's iterations and it exceed
    MANA_AI_MAX_ROW_BYTES: the row would be written, then rejected by the refresh."""
    old = [{"id": f"it-{i}", "summary": "x" * 5000} for i in range(12)]  # ~60 KB, the device's row fits
    await insert_rows(pool, {**mission("m1", agent_id=None, iterations=old), "created_at": PAST})
    metrics = Metrics()
    plan = plan_reply([{**CREATE_TASK, "params": {"title": "y" * 6000}}])
    async with running_fake_llm(plan) as llm:
        async with planning_runtime(pool, llm, metrics, max_row_bytes=65_536) as runtime:
            first = await runtime.snapshots.run_cycle()
            await runtime.snapshots.run_cycle()
    assert (first.plans_produced, first.plans_written_back) == (1, 0)
    assert await written_rows(pool) == []
    [run] = await ledger(pool, "m1")
    assert run["outcome"] == "error" and run["last_error"].startswith("write-back refused: ")
    assert "(row-too-large)" in run["last_error"] and "65536" in run["last_error"]
    assert sample(metrics, "mana_ai_write_backs_refused_total", reason="row-too-large") >= 1
    assert rejected_rows(metrics) == {}
    assert await snapshot_iterations(pool, "m1") == old


async def test_the_tool_planner_rejects_an_unstorable_call_and_the_model_corrects_it(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", agent_id=None), "created_at": PAST})
    metrics = Metrics()
    async with running_fake_llm() as llm:
        llm.responder = per_round(tool_turn(call("create_task", {"title": "a\u0000b"}, call_id="c1")),
                                  tool_turn(call("create_task", {"title": "ab"}, call_id="c2")),
                                  tool_turn(content="Fertig."))
        async with planning_runtime(pool, llm, metrics, planner="tools") as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert (stats.plans_written_back, stats.errors) == (1, [])
    answer = [json.loads(m["content"]) for m in llm.requests[1]["messages"] if m["role"] == "tool"]
    assert answer[0]["success"] is False and "cannot be stored" in answer[0]["message"]
    assert "title" in answer[0]["message"] and "\u0000" not in answer[0]["message"]
    [row] = await written_rows(pool, "m1")
    assert [s["intent"]["params"] for s in row["data"]["iterations"][-1]["plan"]] == [{"title": "ab"}]


async def test_a_tool_plan_whose_summary_cannot_be_stored_is_a_parse_failure(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", agent_id=None), "created_at": PAST})
    metrics = Metrics()
    async with running_fake_llm() as llm:
        llm.responder = per_round(tool_turn(call("create_task", {"title": "ab"}, call_id="c1")),
                                  tool_turn(content="Fertig.\u0000"))
        async with planning_runtime(pool, llm, metrics, planner="tools") as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert (stats.plans_written_back, stats.parse_failures) == (0, 1)
    assert sample(metrics, "mana_ai_parse_failures_total") == 1
    assert await written_rows(pool) == []
    [run] = await ledger(pool, "m1")
    assert run["outcome"] == "parse-failed" and run["last_error"].startswith("summary cannot be stored: ")
