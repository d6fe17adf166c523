"""MANA_AI_PLANNER=tools end to end: seeded rows, a loopback model that speaks tool calls round by
round, and the one written row and ledger entry, against real Postgres."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg

from fake_llm import FakeLlm, Reply, call, per_round, plan_reply, running_fake_llm, tool_turn
from observability.metrics import Metrics
from planner.tool_loop import RECORDED_MESSAGE
from planning import CREATE_TASK, agent_row, ledger, planning_runtime, written_rows
from seed import fetch, insert_rows, mission

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)
TOOLS = {"planner": "tools"}


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"service": "mana-ai", **labels}) or 0.0


async def plan_once(pool: asyncpg.Pool, *turns: Reply, metrics: Metrics | None = None,
                    **overrides: Any) -> FakeLlm:
    async with running_fake_llm() as llm:
        llm.responder = per_round(*turns)
        async with planning_runtime(pool, llm, metrics, **{**TOOLS, **overrides}) as runtime:
            await runtime.snapshots.run_cycle()
    return llm


def tool_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(m["content"]) | {"id": m["tool_call_id"]} for m in request["messages"] if m["role"] == "tool"]


def steps(row: asyncpg.Record) -> list[tuple[str, dict[str, Any]]]:
    return [(s["intent"]["toolName"], s["intent"]["params"]) for s in row["data"]["iterations"][-1]["plan"]]


async def test_a_clean_two_round_plan_is_written_once_like_the_json_planners_row(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", agent_id=None), "created_at": PAST},
                      {**mission("m2", agent_id=None), "created_at": PAST})
    metrics = Metrics()
    llm = await plan_once(pool, tool_turn(call("create_task", {"title": "Foo"}, call_id="c1"),
                                          call("create_note", {"title": "N", "content": "x"}, call_id="c2"),
                                          prompt_tokens=100, completion_tokens=20),
                          tool_turn(content="Zwei Vorschläge für heute.", prompt_tokens=150, completion_tokens=5),
                          metrics=metrics)
    first = next(r for r in llm.requests if len(r["messages"]) == 2)
    assert first["model"] == "gpt-4o-mini" and first["temperature"] == 0.3 and first["tool_choice"] == "auto"
    assert len(first["tools"]) == 17 and first["tools"][0]["type"] == "function"
    assert first["messages"][1]["content"].startswith("# Mission: Wochenreview\n")
    assert "Lese-Tools" in first["messages"][0]["content"]
    second = next(r for r in llm.requests if len(r["messages"]) > 2)
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "tool", "tool"]
    assert second["messages"][2]["tool_calls"][0]["id"] == "c1"
    assert tool_messages(second) == [{"success": True, "message": RECORDED_MESSAGE, "id": "c1"},
                                     {"success": True, "message": RECORDED_MESSAGE, "id": "c2"}]
    assert len(llm.requests) == 4  # two missions, two rounds each
    rows = await written_rows(pool, "m1")
    assert len(rows) == 1
    [row] = rows
    iteration = row["data"]["iterations"][0]
    iid, now = iteration["id"], row["data"]["updatedAt"]
    assert row["data"] == {"iterations": [{
        "id": iid, "startedAt": now, "finishedAt": now,
        "plan": [{"id": f"{iid}-0", "summary": "create_task",
                  "intent": {"kind": "toolCall", "toolName": "create_task", "params": {"title": "Foo"}},
                  "status": "planned"},
                 {"id": f"{iid}-1", "summary": "create_note",
                  "intent": {"kind": "toolCall", "toolName": "create_note", "params": {"title": "N", "content": "x"}},
                  "status": "planned"}],
        "summary": "Zwei Vorschläge für heute.", "overallStatus": "awaiting-review", "source": "server"}],
        "updatedAt": now}
    assert row["field_timestamps"] == {"iterations": now, "updatedAt": now}
    assert row["actor"] == {"kind": "ai", "principalId": "legacy:ai-default", "displayName": "Mana",
                            "missionId": "m1", "iterationId": iid, "rationale": "Review progress"}
    assert (row["app_id"], row["table_name"], row["op"], row["client_id"], row["schema_version"]) == (
        "ai", "aiMissions", "update", "mana-ai-runner", 1)
    [run] = await ledger(pool, "m1")
    assert (run["status"], run["outcome"], run["iteration_id"], run["planner_mode"], run["planner_rounds"]) == (
        "planned", "planned", iid, "tools", 2)
    assert (run["prompt_tokens"], run["completion_tokens"], run["model"]) == (250, 25, "gpt-4o-mini")
    assert sample(metrics, "mana_ai_planner_rounds_count") == 2
    assert sample(metrics, "mana_ai_planner_rounds_bucket", le="2.0") == 2
    assert sample(metrics, "mana_ai_tool_calls_total", tool="create_task", outcome="recorded") == 2
    assert sample(metrics, "mana_ai_plans_written_back_total") == 2


async def test_the_row_has_the_json_planners_shape(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", agent_id=None), "created_at": PAST})
    async with running_fake_llm(plan_reply([CREATE_TASK], summary="S")) as llm:
        async with planning_runtime(pool, llm) as runtime:
            await runtime.snapshots.run_cycle()
    [json_row] = await written_rows(pool, "m1")
    [json_run] = await ledger(pool, "m1")
    assert (json_run["planner_mode"], json_run["planner_rounds"]) == ("json", 1)
    await insert_rows(pool, mission("m2", agent_id=None))  # now: newer than the first refresh's cursor
    await plan_once(pool, tool_turn(call("create_task", {"title": "Foo"})), tool_turn(content="S"))
    [tools_row] = await written_rows(pool, "m2")

    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shape(v) for v in value]
        return type(value).__name__

    assert shape(dict(tools_row)) == shape(dict(json_row))
    assert shape(json.loads(json.dumps(tools_row["data"]))) == shape(json.loads(json.dumps(json_row["data"])))


async def test_an_unknown_tool_is_rejected_then_corrected(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", agent_id=None), "created_at": PAST})
    metrics = Metrics()
    llm = await plan_once(pool, tool_turn(call("create_todo", {"title": "Foo"}, call_id="x")),
                          tool_turn(call("create_task", {"title": "Foo"}, call_id="y")),
                          tool_turn(content="fertig"), metrics=metrics)
    [answer] = tool_messages(llm.requests[1])
    assert answer["success"] is False and answer["id"] == "x" and '"create_todo"' in answer["message"]
    [row] = await written_rows(pool)
    assert steps(row) == [("create_task", {"title": "Foo"})]
    assert sample(metrics, "mana_ai_tool_calls_total", tool="unknown", outcome="rejected") == 1
    assert sample(metrics, "mana_ai_tool_calls_total", tool="create_task", outcome="recorded") == 1


async def test_a_missing_required_parameter_is_rejected_then_corrected(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", agent_id=None), "created_at": PAST})
    llm = await plan_once(pool, tool_turn(call("create_event", {"title": "Termin"})),
                          tool_turn(call("create_event", {"title": "Termin", "startIso": "2026-05-01T09:00"})),
                          tool_turn(content="ok"))
    [answer] = tool_messages(llm.requests[1])
    assert answer["success"] is False and '"create_event"' in answer["message"] and '"startIso"' in answer["message"]
    [row] = await written_rows(pool)
    assert steps(row) == [("create_event", {"title": "Termin", "startIso": "2026-05-01T09:00"})]


async def test_a_wrong_type_and_a_bad_enum_are_rejected_then_corrected(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", agent_id=None), "created_at": PAST})
    llm = await plan_once(pool, tool_turn(call("create_task", {"title": 42}),
                                          call("create_task", {"title": "B", "priority": "urgent"})),
                          tool_turn(call("create_task", {"title": "42"}),
                                    call("create_task", {"title": "B", "priority": "high"})),
                          tool_turn(content="korrigiert"))
    wrong_type, bad_enum = tool_messages(llm.requests[1])
    assert not wrong_type["success"] and '"title"' in wrong_type["message"] and "string" in wrong_type["message"]
    assert not bad_enum["success"] and '"priority"' in bad_enum["message"] and "high" in bad_enum["message"]
    [row] = await written_rows(pool)
    assert steps(row) == [("create_task", {"title": "42"}), ("create_task", {"title": "B", "priority": "high"})]
    assert row["data"]["iterations"][0]["summary"] == "korrigiert"


async def test_a_model_that_never_stops_gets_exactly_the_round_limit(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", agent_id=None), "created_at": PAST})
    metrics = Metrics()
    llm = await plan_once(pool, tool_turn(call("undo_drink", {}), content="weiter"), metrics=metrics,
                          planner_max_rounds=3)
    assert len(llm.requests) == 3
    [row] = await written_rows(pool)
    iteration = row["data"]["iterations"][0]
    assert len(iteration["plan"]) == 3 and iteration["summary"] == ""
    assert iteration["overallStatus"] == "awaiting-review"
    [run] = await ledger(pool, "m1")
    assert (run["status"], run["planner_rounds"]) == ("planned", 3)
    assert sample(metrics, "mana_ai_planner_rounds_bucket", le="2.0") == 0
    assert sample(metrics, "mana_ai_planner_rounds_bucket", le="3.0") == 1


async def test_a_denied_tool_is_neither_offered_nor_recorded(pool: asyncpg.Pool) -> None:
    policy = {"tools": {"create_task": "deny"}, "defaultForAi": "propose"}
    await insert_rows(pool, {**agent_row("a1", policy=policy), "created_at": PAST},
                      {**mission("m1", agent_id="a1"), "created_at": PAST})
    metrics = Metrics()
    llm = await plan_once(pool, tool_turn(call("create_task", {"title": "Foo"})), tool_turn(content=None),
                          metrics=metrics)
    offered = [t["function"]["name"] for t in llm.requests[0]["tools"]]
    assert "create_task" not in offered and len(offered) == 16
    [answer] = tool_messages(llm.requests[1])
    assert answer["success"] is False and "not allowed" in answer["message"]
    [row] = await written_rows(pool)
    iteration = row["data"]["iterations"][0]
    assert iteration["plan"] == [] and iteration["summary"] == "" and iteration["overallStatus"] == "approved"
    [run] = await ledger(pool, "m1")
    assert (run["outcome"], run["planner_mode"]) == ("empty-plan", "tools")
    assert sample(metrics, "mana_ai_tool_calls_total", tool="create_task", outcome="rejected") == 1
    assert llm.requests[0]["messages"][0]["content"].startswith("<agent_context>\nAgent: Recherche\n")


async def test_malformed_arguments_are_a_rejected_call_not_a_crash(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", agent_id=None), "created_at": PAST})
    metrics = Metrics()
    llm = await plan_once(pool, tool_turn(call("create_task", '{"title": "Foo"', call_id="bad"),
                                          call("create_note", {"title": "ok"}, call_id="good")),
                          tool_turn(content="done"), metrics=metrics)
    bad, good = tool_messages(llm.requests[1])
    assert (bad["id"], bad["success"], good["success"]) == ("bad", False, True)
    assert '"create_task"' in bad["message"]
    [row] = await written_rows(pool)
    assert steps(row) == [("create_note", {"title": "ok"})]
    assert sample(metrics, "mana_ai_mission_errors_total") == 0


async def test_usage_is_summed_and_the_budget_stops_the_loop_between_rounds(pool: asyncpg.Pool) -> None:
    # the first round is admitted (0 used); 1200 tokens later the 1000-token budget is spent
    await insert_rows(pool, {**agent_row("a1", maxTokensPerDay=1000), "created_at": PAST},
                      {**mission("m1", agent_id="a1"), "created_at": PAST})
    metrics = Metrics()
    llm = await plan_once(pool, tool_turn(call("create_task", {"title": "A"}), prompt_tokens=1000,
                                          completion_tokens=200),
                          tool_turn(call("create_task", {"title": "B"})), metrics=metrics)
    assert len(llm.requests) == 1
    [row] = await written_rows(pool)
    assert steps(row) == [("create_task", {"title": "A"})]
    [run] = await ledger(pool, "m1")
    assert (run["status"], run["planner_rounds"], run["prompt_tokens"], run["completion_tokens"]) == (
        "planned", 1, 1000, 200)
    usage = await fetch(pool, "SELECT status, prompt_tokens, completion_tokens, iteration_id FROM mana_ai.token_usage"
                              " WHERE mission_id = 'm1'")
    assert [tuple(u) for u in usage] == [("used", 1000, 200, row["data"]["iterations"][0]["id"])]
    assert sample(metrics, "mana_ai_tokens_used_total", agent_id="a1") == 1200


async def test_usage_of_all_rounds_is_settled_and_a_warning_reminder_is_sent(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**agent_row("a1", maxTokensPerDay=10_000), "created_at": PAST},
                      {**mission("m1", agent_id="a1"), "created_at": PAST})
    llm = await plan_once(pool, tool_turn(call("create_task", {"title": "A"}), prompt_tokens=7000,
                                          completion_tokens=600),
                          tool_turn(call("create_task", {"title": "B"}), prompt_tokens=900, completion_tokens=100),
                          tool_turn(content="fertig", prompt_tokens=50, completion_tokens=10))
    assert len(llm.requests) == 3
    first, second, third = (r["messages"] for r in llm.requests)
    assert first[-1]["role"] == "user"
    assert second[-1]["role"] == "system" and second[-1]["content"].startswith("<reminder>")  # 76 %
    assert "76 %" in second[-1]["content"]
    assert sum(1 for m in third if m["content"] and str(m["content"]).startswith("<reminder>")) == 1  # 86 %
    usage = await fetch(pool, "SELECT status, prompt_tokens, completion_tokens FROM mana_ai.token_usage"
                              " WHERE mission_id = 'm1'")
    assert [tuple(u) for u in usage] == [("used", 7950, 710)]


async def test_an_llm_failure_after_a_round_charges_the_spent_tokens_and_retries(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**agent_row("a1", maxTokensPerDay=100_000), "created_at": PAST},
                      {**mission("m1", agent_id="a1"), "created_at": PAST})
    llm = await plan_once(pool, tool_turn(call("create_task", {"title": "A"})), Reply(status=400, body="nope"))
    assert len(llm.requests) == 2 and await written_rows(pool) == []
    [run] = await ledger(pool, "m1")
    assert run["status"] == "retry" and "mana-llm 400" in run["last_error"]
    usage = await fetch(pool, "SELECT status, prompt_tokens, completion_tokens, iteration_id FROM mana_ai.token_usage")
    assert [tuple(u) for u in usage] == [("used", 11, 7, None)]


async def test_llm_max_tokens_is_sent_in_every_round(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", agent_id=None), "created_at": PAST})
    llm = await plan_once(pool, tool_turn(call("create_task", {"title": "A"})), tool_turn(content="fertig"),
                          llm_max_tokens=300)
    assert len(llm.requests) == 2 and [r.get("max_tokens") for r in llm.requests] == [300, 300]
    assert len(await written_rows(pool)) == 1


async def test_a_round_cut_off_at_the_token_limit_is_a_parse_failure(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**agent_row("a1", maxTokensPerDay=100_000), "created_at": PAST},
                      {**mission("m1", agent_id="a1"), "created_at": PAST})
    metrics = Metrics()
    llm = await plan_once(pool, tool_turn(call("create_task", {"title": "A"}), prompt_tokens=100, completion_tokens=20),
                          tool_turn(call("create_note", '{"title": "N", "content": "ab'), prompt_tokens=150,
                                    completion_tokens=300, finish_reason="length"),
                          tool_turn(content="fertig"), metrics=metrics)
    assert len(llm.requests) == 2 and await written_rows(pool) == []
    [run] = await ledger(pool, "m1")
    assert run["status"] == "retry" and run["outcome"] == "parse-failed"
    assert run["last_error"] == "answer cut off at the token limit"
    assert sample(metrics, "mana_ai_parse_failures_total") == 1
    usage = await fetch(pool, "SELECT status, prompt_tokens, completion_tokens, iteration_id FROM mana_ai.token_usage")
    assert [tuple(u) for u in usage] == [("used", 250, 320, None)]
