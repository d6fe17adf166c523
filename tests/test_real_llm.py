"""bench/real_llm_check.py, the check against a real OpenAI-compatible server, as a process.

The first test runs it against a loopback stand-in (always; it keeps the script working). The
second is opt-in (marker `real_llm`): a short check against the server named by
MANA_AI_TEST_REAL_LLM_URL (model: MANA_AI_TEST_REAL_LLM_MODEL, default `local`); without it the
test is skipped. docs/local-models.md has the recipe for a server on a small machine.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from conftest import PgServer
from fake_llm import plan_reply, running_fake_llm

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "real_llm_check.py"
REAL_URL = os.environ.get("MANA_AI_TEST_REAL_LLM_URL", "")
REAL_MODEL = os.environ.get("MANA_AI_TEST_REAL_LLM_MODEL", "") or "local"
OUTCOMES = ("planned (", "empty plan", "parse failure: ", "timeout", "error: ")

pytestmark = pytest.mark.slow


async def run_check(pg: PgServer, *args: str, timeout_s: float) -> list[dict[str, Any]]:
    """The script's rows (`--json`); it must exit 0 whatever the model answered."""
    env = {**os.environ, "MANA_AI_BENCH_DSN": pg.admin_dsn}
    with trio.fail_after(timeout_s):
        done = await trio.run_process([sys.executable, str(SCRIPT), "--json", *args], cwd=str(ROOT), env=env,
                                      capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


async def test_the_check_plans_a_seeded_mission_through_a_stand_in(pg: PgServer) -> None:
    step = {"summary": "Zahnarzt eintragen", "toolName": "create_event",
            "params": {"title": "Zahnarzt", "startIso": "2026-12-07T09:00:00Z"}, "rationale": "steht in der Notiz"}
    async with running_fake_llm(plan_reply([step], summary="Woche", prompt_tokens=321, completion_tokens=45)) as llm:
        rows = await run_check(pg, "--base-url", llm.url, "--model", "stand-in", "--missions", "1",
                               "--planner", "json", "--format", "none", timeout_s=60)
    assert [(r["planner"], r["mission"], r["outcome"]) for r in rows] == [("json", "de-wochenplan", "planned (1 steps)")]
    assert rows[0]["format"] in ("none", "-")
    assert (rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == (321, 45)
    assert rows[0]["steps"] == [{"kind": "toolCall", "toolName": "create_event", "params": step["params"]}]
    # the model, and the plaintext note read under the mission's grant, reached the prompt
    [request] = llm.requests
    assert request["model"] == "stand-in"
    prompt = json.dumps(request["messages"], ensure_ascii=False)
    assert "Zahnarzt (Dr. Weber)" in prompt and "Wochenplanung" in prompt
    assert "create_event" in prompt and "create_place" not in prompt  # the agent's policy denies the rest


@pytest.mark.real_llm
@pytest.mark.skipif(not REAL_URL, reason="needs a real OpenAI-compatible server: set MANA_AI_TEST_REAL_LLM_URL"
                    " (e.g. http://127.0.0.1:8085) and MANA_AI_TEST_REAL_LLM_MODEL, see docs/local-models.md")
async def test_a_real_server_answers_the_check(pg: PgServer) -> None:
    rows = await run_check(pg, "--base-url", REAL_URL, "--model", REAL_MODEL, "--missions", "1",
                           "--planner", "json", "--planner", "tools", "--timeout", "120", "--max-tokens", "512",
                           timeout_s=1200)
    assert {r["planner"] for r in rows} == {"json", "tools"}
    for row in rows:  # the model's quality is not judged here, only that each run has a verdict
        assert row["outcome"].startswith(OUTCOMES), row
        assert not row["outcome"].startswith("error: mana-llm unreachable"), row
