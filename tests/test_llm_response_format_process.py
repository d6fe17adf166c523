"""The daemon as a process with MANA_AI_LLM_RESPONSE_FORMAT, against a stand-in LLM that behaves
like llama-cpp-python's server: it takes ``{"type": "json_object", "schema": …}`` and answers a
plan of that schema, and answers 500 to ``{"type": "json_schema", …}``.

The request carries the format the setting names, with the schema built from the agent's
allowed tools; the 500 lands in the run ledger as a clear error (the status and the start of
the server's text, truncated, credentials redacted), retried like any LLM error.
"""

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
from fake_llm import FakeLlm, Reply, completion, running_fake_llm
from test_daemon_process import Daemon, daemon_env, free_port, wait_healthy

pytestmark = pytest.mark.slow

API_KEY = "sk-local-0123456789abcdef"
AGENT = {"id": "a1", "name": "Planer", "role": "r", "state": "active",
         "policy": {"tools": {"create_task": "propose", "create_note": "propose"}, "defaultForAi": "deny"}}


def llama_cpp_python(body: dict[str, Any]) -> Reply:
    """json_object (with or without a schema) → a plan of the schema; json_schema → its 500,
    whose text is long and echoes the request's credential (servers do print their input)."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        detail = f"Traceback (most recent call last): ... Authorization: Bearer {API_KEY} ... " + "x" * 2000
        return Reply(status=500, body={"error": {"message": detail, "type": "internal_server_error"}})
    schema = fmt.get("schema")
    if schema is None:  # no constraint: a small model answers prose (as SmolLM2-135M does)
        return completion("Gerne! Ich würde vorschlagen, zuerst einen Task anzulegen.")
    [branch, *_] = schema["properties"]["steps"]["items"]["anyOf"]
    [tool] = branch["properties"]["toolName"]["enum"]
    plan = {"summary": "Ein Task", "steps": [{"toolName": tool, "summary": "s", "params": {"title": "T"},
                                              "rationale": "weil"}]}
    return completion(json.dumps(plan, ensure_ascii=False))


def sample(metrics: str, name: str) -> float:
    found = re.search(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


SETTLED = ("mana_ai_plans_written_back_total", "mana_ai_mission_errors_total", "mana_ai_parse_failures_total")


def settled(metrics: str) -> bool:
    return any(sample(metrics, name) >= 1 for name in SETTLED)


async def run_daemon_once(tmp_path: Path, db_dsn: str, pg: PgServer, fmt: str) -> FakeLlm:
    """Seed one agent mission, run the daemon with ``fmt`` until the mission's run settled, stop it."""
    database = urlsplit(db_dsn).path[1:]
    past = (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat()
    mission = {"id": "m1", "title": "T", "objective": "o", "state": "active", "agentId": "a1",
               "nextRunAt": "2026-01-01T00:00:00.000Z"}
    for table, record in (("agents", AGENT), ("aiMissions", mission)):
        pg.sql("INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id, created_at) "
               f"VALUES ('ai', '{table}', '{record['id']}', 'u-1', 'insert', '{json.dumps(record)}', 'device', "
               f"'{past}')", database)
    async with running_fake_llm() as llm:
        llm.responder = llama_cpp_python
        port = free_port()
        env = daemon_env(PORT=str(port), SYNC_DATABASE_URL=db_dsn, MANA_AI_HOST="127.0.0.1", MANA_LLM_URL=llm.url,
                         MANA_AI_LLM_RESPONSE_FORMAT=fmt, MANA_AI_LLM_API_KEY=API_KEY, MANA_AI_LLM_RETRIES="0")
        daemon = Daemon(tmp_path, [], env)
        process = await daemon.start()
        try:
            await wait_healthy(f"http://127.0.0.1:{port}", daemon=daemon)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                with trio.fail_after(30):  # the first cycle, at start, plans m1
                    while not settled((await client.get("/metrics")).text):
                        assert process.returncode is None, daemon.log()
                        await trio.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            assert await daemon.wait(timeout=15) == 0, daemon.log()
        finally:
            if process.returncode is None:
                process.kill()
                await daemon.wait()
    assert API_KEY not in daemon.log()
    return llm


async def test_json_object_schema_sends_the_agents_plan_schema_and_the_plan_is_written(
        tmp_path: Path, db_dsn: str, pg: PgServer) -> None:
    llm = await run_daemon_once(tmp_path, db_dsn, pg, "json_object_schema")
    [request] = llm.requests
    assert list(request) == ["model", "temperature", "messages", "response_format"]
    fmt = request["response_format"]
    assert fmt["type"] == "json_object" and set(fmt) == {"type", "schema"}
    branches = fmt["schema"]["properties"]["steps"]["items"]["anyOf"]
    assert [b["properties"]["toolName"]["enum"] for b in branches] == [["create_task"], ["create_note"]]
    database = urlsplit(db_dsn).path[1:]
    assert pg.sql("SELECT outcome FROM mana_ai.mission_runs WHERE mission_id = 'm1'", database) == "planned"


async def test_a_500_to_json_schema_lands_in_the_ledger_truncated_and_redacted(
        tmp_path: Path, db_dsn: str, pg: PgServer) -> None:
    llm = await run_daemon_once(tmp_path, db_dsn, pg, "json_schema")
    [request] = llm.requests
    fmt = request["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "mission_plan"
    assert fmt["json_schema"]["strict"] is True and fmt["json_schema"]["schema"]["required"] == ["summary", "steps"]
    database = urlsplit(db_dsn).path[1:]
    row = pg.sql("SELECT outcome || '|' || status || '|' || last_error FROM mana_ai.mission_runs "
                 "WHERE mission_id = 'm1'", database)
    outcome, status, error = row.split("|", 2)
    assert (outcome, status) == ("error", "retry"), row
    assert error.startswith('mana-llm 500: {"error": {"message": "Traceback'), error
    body, hint = error.split(" (sent with ", 1)
    assert API_KEY not in error and len(body) <= len("mana-llm 500: ") + 500
    assert hint == ("MANA_AI_LLM_RESPONSE_FORMAT=json_schema: a server that does not take this format answers so; "
                    "docs/configuration.md names the one that fits)")
