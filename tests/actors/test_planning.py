"""From seeded sync_changes rows to the written row, against a stand-in LLM on loopback."""

from __future__ import annotations

import json
import re
from pathlib import Path
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest
import trio

from fake_llm import Reply, completion, plan_reply, running_fake_llm
from observability.metrics import Metrics
from planning import CREATE_TASK, agent_row, ledger, planning_runtime, written_rows
from seed import fetch, insert_rows, mission, update

GOLDEN = Path(__file__).parents[1] / "planner" / "golden"
PAST = datetime.now(timezone.utc) - timedelta(minutes=5)
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def at(seconds: float = 0) -> datetime:
    return PAST + timedelta(seconds=seconds)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"service": "mana-ai", **labels}) or 0.0


async def test_legacy_mission_is_planned_and_written_back_exactly(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", agent_id=None), "created_at": at()})
    async with running_fake_llm(plan_reply([CREATE_TASK], summary="Plan für heute")) as llm:
        async with planning_runtime(pool, llm) as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.as_json() | {"scannedAt": None} == {
        "scannedAt": None, "dueMissionCount": 1, "plansProduced": 1, "plansWrittenBack": 1,
        "parseFailures": 0, "errors": []}
    [row] = await written_rows(pool)
    iteration = row["data"]["iterations"][0]
    iteration_id, now = iteration["id"], row["data"]["updatedAt"]
    assert ISO_MS.match(now)
    assert row["data"] == {"iterations": [{
        "id": iteration_id, "startedAt": now, "finishedAt": now,
        "plan": [{"id": f"{iteration_id}-0", "summary": "Task anlegen",
                  "intent": {"kind": "toolCall", "toolName": "create_task", "params": {"title": "Foo"}},
                  "status": "planned"}],
        "summary": "Plan für heute", "overallStatus": "awaiting-review", "source": "server"}],
        "updatedAt": now}
    assert row["field_timestamps"] == {"iterations": now, "updatedAt": now}
    assert row["actor"] == {"kind": "ai", "principalId": "legacy:ai-default", "displayName": "Mana",
                            "missionId": "m1", "iterationId": iteration_id, "rationale": "Review progress"}
    assert (row["app_id"], row["table_name"], row["record_id"], row["user_id"], row["op"], row["client_id"],
            row["schema_version"]) == ("ai", "aiMissions", "m1", "u-1", "update", "mana-ai-runner", 1)
    # the request was the TypeScript service's: the default 17 tools, no agent context
    [request] = llm.requests
    assert request["model"] == "gpt-4o-mini" and request["temperature"] == 0.3
    system = request["messages"][0]["content"]
    assert system == (GOLDEN / "system_prompt_default.txt").read_text(encoding="utf-8")
    assert request["messages"][1]["content"].startswith("# Mission: Wochenreview\n")
    [run] = await ledger(pool, "m1")
    assert (run["status"], run["attempts"], run["iteration_id"], run["outcome"]) == (
        "planned", 1, iteration_id, "planned")
    assert run["prompt_tokens"] == 11 and run["completion_tokens"] == 7 and len(run["prompt_hash"]) == 64


async def test_agent_mission_uses_policy_agent_context_and_actor(pool: asyncpg.Pool) -> None:
    policy = {"tools": {"create_task": "deny"}, "defaultsByModule": {"notes": "deny"}, "defaultForAi": "propose"}
    await insert_rows(pool, {**agent_row("a1", policy=policy, name="Cashflow Watcher"), "created_at": at()},
                      {**mission("m1", agent_id="a1", objective="Spare Geld"), "created_at": at()})
    create_contact = {"summary": "Kontakt", "toolName": "create_contact", "params": {"firstName": "Ada"},
                      "rationale": "neu"}
    metrics = Metrics()
    async with running_fake_llm(plan_reply([create_contact])) as llm:
        async with planning_runtime(pool, llm, metrics) as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.plans_written_back == 1, stats
    system = llm.requests[0]["messages"][0]["content"]
    assert system.startswith("<agent_context>\nAgent: Cashflow Watcher\nRolle: Sucht Dinge\n</agent_context>\n\n")
    assert "• create_task " not in system and "• create_note " not in system and "• create_contact " in system
    [row] = await written_rows(pool)
    assert row["actor"]["principalId"] == "a1" and row["actor"]["displayName"] == "Cashflow Watcher"
    assert row["actor"]["rationale"] == "Spare Geld"
    assert sample(metrics, "mana_ai_agent_decisions_total", decision="ran") == 1


async def test_plan_with_a_tool_the_policy_denies_is_a_parse_failure(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**agent_row("a1", policy={"tools": {"create_task": "deny"}, "defaultForAi": "propose"}),
                             "created_at": at()},
                      {**mission("m1", agent_id="a1"), "created_at": at()})
    metrics = Metrics()
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, metrics) as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert (stats.parse_failures, stats.plans_produced, stats.errors) == (1, 0, [])
    assert await written_rows(pool) == []
    [run] = await ledger(pool, "m1")
    assert run["status"] == "retry" and run["outcome"] == "parse-failed"
    assert run["last_error"] == 'step[0].toolName "create_task" is not in the allowed tool set'
    assert sample(metrics, "mana_ai_parse_failures_total") == 1


async def test_llm_max_tokens_bounds_the_request_and_unset_keeps_the_reference_body(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1"), "created_at": at()})
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm) as runtime:
            await runtime.snapshots.run_cycle()
    assert list(llm.requests[0]) == ["model", "temperature", "messages"]
    await insert_rows(pool, {**mission("m2"), "created_at": at(60)})
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, llm_max_tokens=700) as runtime:
            await runtime.snapshots.run_cycle()
    [request] = llm.requests
    assert list(request) == ["model", "temperature", "messages", "max_tokens"] and request["max_tokens"] == 700


async def test_an_answer_cut_off_at_the_token_limit_is_a_parse_failure_even_when_it_parses(
        pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1"), "created_at": at()})
    metrics = Metrics()
    cut = plan_reply([CREATE_TASK], prompt_tokens=40, completion_tokens=700)
    cut.body["choices"][0]["finish_reason"] = "length"
    async with running_fake_llm(cut) as llm:
        async with planning_runtime(pool, llm, metrics) as runtime:  # a server's own limit cuts off too
            stats = await runtime.snapshots.run_cycle()
    assert (stats.parse_failures, stats.plans_produced, stats.errors) == (1, 0, [])
    assert await written_rows(pool) == []
    [run] = await ledger(pool, "m1")
    assert run["status"] == "retry" and run["outcome"] == "parse-failed"
    assert run["last_error"] == "answer cut off at the token limit"
    assert sample(metrics, "mana_ai_parse_failures_total") == 1
    assert sample(metrics, "mana_ai_plans_produced_total") == 0
    usage = await fetch(pool, "SELECT prompt_tokens, completion_tokens, iteration_id FROM mana_ai.token_usage")
    assert [tuple(u) for u in usage] == [(40, 700, None)]  # the tokens were spent all the same


async def test_paused_and_archived_agents_are_skipped_without_llm_calls(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**agent_row("paused", state="paused"), "created_at": at()},
                      {**agent_row("archived", state="archived"), "created_at": at()},
                      {**mission("m1", agent_id="paused"), "created_at": at()},
                      {**mission("m2", agent_id="archived"), "created_at": at()})
    metrics = Metrics()
    async with running_fake_llm() as llm:
        async with planning_runtime(pool, llm, metrics) as runtime:
            stats = await runtime.snapshots.run_cycle()
            assert (stats.due_mission_count, stats.plans_produced, stats.errors) == (2, 0, [])
            assert llm.requests == []
            assert sample(metrics, "mana_ai_agent_decisions_total", decision="skipped-paused") == 1
            assert sample(metrics, "mana_ai_agent_decisions_total", decision="skipped-archived") == 1
            # the slots stay due: resuming the agent plans the mission in the next cycle
            await insert_rows(pool, update("agents", "paused", {"state": "active"}, "2026-04-16T00:00:00.000Z",
                                           created_at=at(1)))
            stats = await runtime.snapshots.run_cycle()
    assert stats.plans_written_back == 1
    assert [r["record_id"] for r in await written_rows(pool)] == ["m1"]
    [run] = await ledger(pool, "m2")
    assert run["attempts"] == 0 and run["status"] == "retry"  # skips do not use up attempts


async def test_agent_concurrency_limit_holds_and_waiting_missions_run_in_the_same_cycle(pool: asyncpg.Pool) -> None:
    rows = [{**agent_row("a1", limit=2), "created_at": at()}, {**agent_row("a2", limit=1), "created_at": at()}]
    rows += [{**mission(f"a1-m{i}", agent_id="a1"), "created_at": at()} for i in range(5)]
    rows += [{**mission(f"a2-m{i}", agent_id="a2"), "created_at": at()} for i in range(2)]
    await insert_rows(pool, *rows)
    in_flight: dict[str, int] = {"a1": 0, "a2": 0}
    peak: dict[str, int] = {"a1": 0, "a2": 0}

    async with running_fake_llm() as llm:
        def responder(body: dict[str, object]) -> Reply:
            return Reply(body=completion("```json\n{\"summary\":\"x\",\"steps\":[]}\n```").body, delay_s=0.2)
        llm.responder = responder
        async with planning_runtime(pool, llm) as runtime:
            async def watch() -> None:
                while True:
                    for agent in ("a1", "a2"):
                        actor = next((s for s in runtime.registry.actor_stats() if s.key == ("u-1", agent)), None)
                        if actor is not None:
                            in_flight[agent] = len(actor.in_flight)
                            peak[agent] = max(peak[agent], in_flight[agent])
                    await trio.sleep(0.01)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                stats = await runtime.snapshots.run_cycle()
                nursery.cancel_scope.cancel()
    assert stats.plans_written_back == 7 and stats.errors == []
    assert peak == {"a1": 2, "a2": 1}
    assert llm.max_in_flight == 3  # both agents in parallel, each within its own limit


async def test_zero_concurrency_blocks_every_mission(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**agent_row("a1", limit=0), "created_at": at()},
                      {**mission("m1", agent_id="a1"), "created_at": at()})
    metrics = Metrics()
    async with running_fake_llm() as llm:
        async with planning_runtime(pool, llm, metrics) as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.plans_produced == 0 and llm.requests == []
    assert sample(metrics, "mana_ai_agent_decisions_total", decision="skipped-concurrency") == 1


async def test_full_mailbox_is_skipped_concurrency(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**agent_row("a1", limit=1), "created_at": at()},
                      *[{**mission(f"m{i}", agent_id="a1"), "created_at": at()} for i in range(5)])
    metrics = Metrics()
    async with running_fake_llm(Reply(body=plan_reply([]).body, delay_s=0.05)) as llm:
        async with planning_runtime(pool, llm, metrics, mailbox_size=2) as runtime:
            stats = await runtime.snapshots.run_cycle()
            assert stats.plans_written_back + int(sample(metrics, "mana_ai_agent_decisions_total",
                                                         decision="skipped-concurrency")) == 5
            assert sample(metrics, "mana_ai_agent_decisions_total", decision="skipped-concurrency") >= 1
            # the skipped ones are due again and run in the following cycles
            for _ in range(3):
                await runtime.snapshots.run_cycle()
    assert len(await written_rows(pool)) == 5


async def test_500_then_success_is_retried_within_the_call(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1"), "created_at": at()})
    metrics = Metrics()
    async with running_fake_llm(Reply(status=500, body={"detail": "boom"}), plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, metrics) as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.plans_written_back == 1 and stats.errors == [] and len(llm.requests) == 2
    assert sample(metrics, "mana_ai_llm_retries_total", reason="5xx") == 1


async def test_a_hang_times_out_while_other_agents_finish(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**agent_row("slow"), "created_at": at()}, {**agent_row("fast"), "created_at": at()},
                      {**mission("m-slow", agent_id="slow", title="SLOW"), "created_at": at()},
                      {**mission("m-fast", agent_id="fast", title="FAST"), "created_at": at()})
    finished: dict[str, float] = {}
    async with running_fake_llm() as llm:
        def responder(body: dict[str, object]) -> Reply:
            user = body["messages"][1]["content"]  # type: ignore[index]
            return Reply(hang=True) if "SLOW" in user else plan_reply([CREATE_TASK])
        llm.responder = responder
        async with planning_runtime(pool, llm, llm_timeout_s=1.0, llm_retries=0) as runtime:
            started = trio.current_time()

            async def watch() -> None:
                while "fast" not in finished:
                    if await written_rows(pool, "m-fast"):
                        finished["fast"] = trio.current_time() - started
                    await trio.sleep(0.02)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                stats = await runtime.snapshots.run_cycle()
            elapsed = trio.current_time() - started
    assert finished["fast"] < 0.9 < elapsed < 3
    assert stats.plans_written_back == 1
    assert stats.errors == ["mission=m-slow: mana-llm timed out after 1s"]
    [run] = await ledger(pool, "m-slow")
    assert run["status"] == "retry" and run["last_error"] == "mana-llm timed out after 1s"


async def test_garbage_replies_fail_cleanly_and_retry_later(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, *[{**mission(f"m{i}", title=f"T{i}"), "created_at": at()} for i in range(4)])
    replies = {"T0": Reply(body="<html>not json</html>"), "T1": Reply(body={"id": "x"}),
               "T2": completion(["not", "a", "string"]), "T3": completion("just prose, no plan")}
    async with running_fake_llm() as llm:
        llm.responder = lambda body: next(r for t, r in replies.items()
                                          if f"# Mission: {t}\n" in body["messages"][1]["content"])
        async with planning_runtime(pool, llm) as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.parse_failures == 1 and stats.plans_produced == 0
    assert sorted(stats.errors) == ["mission=m0: mana-llm returned invalid JSON",
                                    "mission=m1: mana-llm response has no choices",
                                    "mission=m2: mana-llm content is not a string"]
    statuses = await fetch(pool, "SELECT status FROM mana_ai.mission_runs")
    assert {r["status"] for r in statuses} == {"retry"}


async def test_slot_is_planned_once_and_again_when_next_run_moves(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1"), "created_at": at()})
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm) as runtime:
            assert (await runtime.snapshots.run_cycle()).plans_written_back == 1
            second = await runtime.snapshots.run_cycle()
            assert (second.due_mission_count, second.plans_written_back) == (0, 0)
            assert len(llm.requests) == 1
            # the device moves nextRunAt: a new due slot
            await insert_rows(pool, update("aiMissions", "m1", {"nextRunAt": "2026-04-15T10:00:00.000Z"},
                                           "2026-04-15T09:30:00.000Z"))
            third = await runtime.snapshots.run_cycle()
    assert third.plans_written_back == 1
    rows = await written_rows(pool, "m1")
    assert len(rows) == 2
    # the second write-back built on the freshest iterations: it carries the first one too
    assert len(rows[1]["data"]["iterations"]) == 2
    slots = await fetch(pool, "SELECT due_slot, status FROM mana_ai.mission_runs ORDER BY due_slot")
    assert [(r["due_slot"], r["status"]) for r in slots] == [
        ("2026-04-15T09:00:00.000Z", "planned"), ("2026-04-15T10:00:00.000Z", "planned")]


async def test_failures_back_off_then_the_slot_dies_with_its_history(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1"), "created_at": at()})
    metrics = Metrics()
    async with running_fake_llm(Reply(status=400, body="bad request")) as llm:
        async with planning_runtime(pool, llm, metrics, max_attempts=3) as runtime:
            for _ in range(5):
                await runtime.snapshots.run_cycle()
    assert len(llm.requests) == 3
    [run] = await ledger(pool, "m1")
    assert run["status"] == "dead" and run["attempts"] == 3
    assert [e["attempt"] for e in run["error_history"]] == [1, 2, 3]
    assert run["error_history"][0]["error"] == "mana-llm 400: bad request"


async def test_malformed_iterations_still_plan(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", iterations="oops", inputs={"not": "a list"}), "created_at": at()})
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm) as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.plans_written_back == 1
    [row] = await written_rows(pool)
    assert len(row["data"]["iterations"]) == 1


async def test_a_cycle_dispatches_at_most_the_limit_and_the_next_one_follows(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, *[{**mission(f"m{i}", next_run_at=f"2026-04-15T09:0{i}:00.000Z"), "created_at": at()}
                              for i in range(5)])
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, dispatch_limit=2) as runtime:
            stats = await runtime.snapshots.run_cycle()
            assert stats.due_mission_count == 2
            assert sorted(r["record_id"] for r in await written_rows(pool)) == ["m0", "m1"]  # oldest first
        async with planning_runtime(pool, llm, dispatch_limit=2, tick_enabled=True, tick_interval_ms=60_000) as runtime:
            async with trio.open_nursery() as nursery:
                await nursery.start(runtime.snapshots.run)
                with trio.fail_after(10):
                    while len(await written_rows(pool)) < 5:
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
    assert len(llm.requests) == 5


@pytest.mark.parametrize("llm_key", [None, "sk-llm-own-key"])
async def test_the_llm_gets_its_own_key_and_never_the_service_key(pool: asyncpg.Pool, llm_key: str | None) -> None:
    await insert_rows(pool, {**mission("m1", agent_id=None), "created_at": at()})
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, service_key="internal-only-key", llm_api_key=llm_key) as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.plans_written_back == 1
    [headers] = llm.headers
    assert "internal-only-key" not in json.dumps(headers)
    if llm_key is None:
        assert "authorization" not in headers and "x-api-key" not in headers
    else:
        assert headers["authorization"] == f"Bearer {llm_key}" and headers["x-api-key"] == llm_key
