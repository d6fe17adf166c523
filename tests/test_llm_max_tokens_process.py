"""The daemon as a process with MANA_AI_LLM_MAX_TOKENS, against a stand-in LLM that stops at the
limit: the request carries the limit, and the cut-off answer (which parses) is no plan but a
parse failure an operator can read in the ledger, the log and /metrics."""

from __future__ import annotations

import json
import re
import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from conftest import PgServer
from fake_llm import Reply, plan_reply, running_fake_llm
from test_daemon_process import Daemon, daemon_env, free_port, wait_healthy

pytestmark = pytest.mark.slow

STEP = {"summary": "Task anlegen", "toolName": "create_task", "params": {"title": "Foo"}, "rationale": "r"}


def cut_off_plan(body: dict[str, Any]) -> Reply:
    """A whole, parseable plan, but stopped at the request's max_tokens."""
    reply = plan_reply([STEP], completion_tokens=int(body.get("max_tokens", 0)))
    reply.body["choices"][0]["finish_reason"] = "length"
    return reply


def parse_failures(metrics: str) -> float:
    found = re.search(r'^mana_ai_parse_failures_total\{[^}]*\} (\S+)$', metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_a_cut_off_answer_is_a_parse_failure_of_the_daemon_process(
        tmp_path: Path, db_dsn: str, pg: PgServer) -> None:
    database = urlsplit(db_dsn).path[1:]
    past = (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat()
    data = {"id": "m1", "title": "T", "objective": "o", "state": "active", "nextRunAt": "2026-01-01T00:00:00.000Z"}
    pg.sql("INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id, created_at) "
           f"VALUES ('ai', 'aiMissions', 'm1', 'u-1', 'insert', '{json.dumps(data)}', 'device', '{past}')",
           database)
    async with running_fake_llm() as llm:
        llm.responder = cut_off_plan
        port = free_port()
        env = daemon_env(PORT=str(port), SYNC_DATABASE_URL=db_dsn, MANA_AI_HOST="127.0.0.1",
                         MANA_LLM_URL=llm.url, MANA_AI_LLM_MAX_TOKENS="64")
        daemon = Daemon(tmp_path, [], env)
        process = await daemon.start()
        try:
            await wait_healthy(f"http://127.0.0.1:{port}", daemon=daemon)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                with trio.fail_after(30):  # the first cycle, at start, plans m1
                    while parse_failures((await client.get("/metrics")).text) < 1:
                        assert process.returncode is None, daemon.log()
                        await trio.sleep(0.1)
                metrics = (await client.get("/metrics")).text
            process.send_signal(signal.SIGTERM)
            assert await daemon.wait(timeout=15) == 0, daemon.log()
        finally:
            if process.returncode is None:
                process.kill()
                await daemon.wait()
    [request] = llm.requests
    assert request["max_tokens"] == 64 and list(request) == ["model", "temperature", "messages", "max_tokens"]
    assert parse_failures(metrics) == 1
    assert re.search(r"^mana_ai_plans_produced_total\{[^}]*\} 0\.0$", metrics, re.MULTILINE), metrics
    assert pg.sql("SELECT outcome || '|' || last_error FROM mana_ai.mission_runs WHERE mission_id = 'm1'",
                  database) == "parse-failed|answer cut off at the token limit"
    assert pg.sql("SELECT count(*) FROM sync_changes WHERE client_id = 'mana-ai-runner'", database) == "0"
    assert "mission.parse_failed" in daemon.log() and "answer cut off at the token limit" in daemon.log()
