"""A call the daemon gives up on at MANA_AI_LLM_TIMEOUT_S is charged at its estimate.

A real server does not stop when the client goes: llama-cpp-python's server generates a
non-streamed answer to the end after the connection closed (and holds its one model meanwhile),
and a paid API bills the tokens all the same. Released, such calls would cost nothing in the
token ledger, so an agent's budget and the spend caps would never stop a mission that times out
again and again. The stand-in below never answers, as a server busy beyond the timeout.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from fake_llm import Reply, per_round, running_fake_llm, call, tool_turn
from planning import agent_row, ledger, planning_runtime
from seed import fetch, insert_rows, mission
from store.usage import usage_24h

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)


def prompt_chars(request: dict[str, Any]) -> int:
    """What the daemon estimated the prompt from: its messages' text (and the tools, if any)."""
    chars = sum(len(m["content"]) for m in request["messages"])
    return chars + (len(json.dumps(request["tools"])) if "tools" in request else 0)


async def usage_rows(pool: asyncpg.Pool) -> list[tuple[Any, ...]]:
    rows = await fetch(pool, "SELECT status, reserved_tokens, prompt_tokens, completion_tokens, iteration_id"
                             " FROM mana_ai.token_usage WHERE mission_id = 'm1'")
    return [tuple(r) for r in rows]


@pytest.mark.parametrize("budget", [50_000, None], ids=["agent-budget", "no-budget"])
async def test_a_timed_out_call_is_charged_at_its_estimate(pool: asyncpg.Pool, budget: int | None) -> None:
    extra: dict[str, Any] = {} if budget is None else {"maxTokensPerDay": budget}
    await insert_rows(pool, {**agent_row("a1", **extra), "created_at": PAST},
                      {**mission("m1", agent_id="a1"), "created_at": PAST})
    async with running_fake_llm(Reply(hang=True)) as llm:
        async with planning_runtime(pool, llm, llm_timeout_s=0.3, llm_retries=0, llm_max_tokens=256) as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.errors == ["mission=m1: mana-llm timed out after 0.3s"]
    [request] = llm.requests
    assert await usage_rows(pool) == [("used", 0, prompt_chars(request) // 4, 256, None)]
    assert (await usage_24h(pool, "u-1", "a1")).used == prompt_chars(request) // 4 + 256
    [run] = await ledger(pool, "m1")
    assert (run["status"], run["outcome"]) == ("retry", "error")


async def test_a_timed_out_tool_round_is_charged_after_the_rounds_before(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**agent_row("a1", maxTokensPerDay=50_000), "created_at": PAST},
                      {**mission("m1", agent_id="a1"), "created_at": PAST})
    async with running_fake_llm() as llm:
        llm.responder = per_round(tool_turn(call("create_task", {"title": "Foo"}), prompt_tokens=40,
                                            completion_tokens=9), Reply(hang=True))
        async with planning_runtime(pool, llm, planner="tools", llm_timeout_s=0.3, llm_retries=0) as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.errors == ["mission=m1: mana-llm timed out after 0.3s"]
    first, _ = llm.requests
    # the first round as reported, the abandoned one at the estimate (no max_tokens: 1024)
    assert await usage_rows(pool) == [("used", 0, 40 + prompt_chars(first) // 4, 9 + 1024, None)]
