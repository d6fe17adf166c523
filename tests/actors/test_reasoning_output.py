"""Reasoning models end to end (seeded rows, a loopback model, real Postgres): a draft plan in the
thinking is never written, the thinking is never stored or sent back, only its length is counted."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg

from fake_llm import Reply, call, completion, per_round, running_fake_llm, tool_turn
from observability.metrics import Metrics
from planning import CREATE_TASK, ledger, planning_runtime, written_rows
from seed import insert_rows, mission

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)
SECRET = "GEHEIM-ENTWURF"
DRAFT = {"summary": "Entwurf", "toolName": "create_note", "params": {"title": SECRET}, "rationale": "d"}


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"service": "mana-ai", **labels}) or 0.0


def plan_text(step: dict[str, Any], summary: str) -> str:
    return json.dumps({"summary": summary, "steps": [step]}, ensure_ascii=False)


def by_title(answers: dict[str, Reply]) -> Any:
    """A responder answering each mission (told apart by its title in the prompt) its own reply."""
    def respond(body: dict[str, Any]) -> Reply:
        user = body["messages"][1]["content"]
        return next(reply for title, reply in answers.items() if f"# Mission: {title}\n" in user)
    return respond


async def test_the_json_planner_writes_the_answer_not_the_draft_in_the_thinking(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", agent_id=None, title="Denken"), "created_at": PAST},
                      {**mission("m2", agent_id=None, title="Daneben"), "created_at": PAST},
                      {**mission("m3", agent_id=None, title="Nur"), "created_at": PAST})
    think = f"<think>\nErst ein Entwurf:\n```json\n{plan_text(DRAFT, 'Entwurf')}\n```\nNein, ein Task.\n</think>\n\n"
    beside = completion("```json\n" + plan_text(CREATE_TASK, "Echt") + "\n```")
    beside.body["choices"][0]["message"]["reasoning_content"] = plan_text(DRAFT, "Entwurf")
    only = completion(None)
    only.body["choices"][0]["message"]["reasoning_content"] = plan_text(DRAFT, "Entwurf")
    metrics = Metrics()
    async with running_fake_llm() as llm:
        llm.responder = by_title({"Denken": completion(think + "```json\n" + plan_text(CREATE_TASK, "Echt") + "\n```"),
                                  "Daneben": beside, "Nur": only})
        async with planning_runtime(pool, llm, metrics) as runtime:
            await runtime.snapshots.run_cycle()
    for mission_id in ("m1", "m2"):
        [row] = await written_rows(pool, mission_id)
        iteration = row["data"]["iterations"][-1]
        assert iteration["summary"] == "Echt"
        assert [s["intent"]["toolName"] for s in iteration["plan"]] == ["create_task"]
        assert SECRET not in json.dumps(row["data"]) + json.dumps(row["actor"])
    assert await written_rows(pool, "m3") == []
    [run] = await ledger(pool, "m3")
    assert (run["outcome"], run["last_error"]) == ("parse-failed",
                                                   "no JSON block found: only reasoning, no answer after it")
    assert sample(metrics, "mana_ai_llm_reasoning_chars_count") == 3
    assert sample(metrics, "mana_ai_llm_reasoning_chars_sum") == len(think) + 2 * len(plan_text(DRAFT, "Entwurf"))


async def test_the_tools_planner_keeps_only_the_answers_of_its_turns(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", agent_id=None), "created_at": PAST})
    first_think = f"<think>Ich rufe create_task auf, nicht {plan_text(DRAFT, 'Entwurf')}</think>"
    last_think = f"<think>\nFertig? Ja. {SECRET}\n</think>\n"
    metrics = Metrics()
    async with running_fake_llm() as llm:
        llm.responder = per_round(tool_turn(call("create_task", {"title": "Foo"}, call_id="c1"), content=first_think),
                                  tool_turn(content=last_think + "Ein Vorschlag für heute."))
        async with planning_runtime(pool, llm, metrics, planner="tools") as runtime:
            await runtime.snapshots.run_cycle()
    [row] = await written_rows(pool, "m1")
    assert row["data"]["iterations"][-1]["summary"] == "Ein Vorschlag für heute."
    assert SECRET not in json.dumps(row["data"])
    second = llm.requests[1]
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "tool"]
    assert second["messages"][2]["content"] == ""  # the thinking is not sent back
    assert sample(metrics, "mana_ai_llm_reasoning_chars_count") == 2
    assert sample(metrics, "mana_ai_llm_reasoning_chars_sum") == len(first_think) + len(last_think)
