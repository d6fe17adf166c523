"""Every credential set, every way out searched: logs, tick results, inspection, metrics,
health, and every table the daemon writes. None may appear anywhere."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import PgServer
from fake_llm import Reply, plan_reply, running_fake_llm
from planning import CREATE_TASK
from test_daemon_process import Daemon, daemon_env, free_port, wait_healthy

pytestmark = pytest.mark.slow

SERVICE_KEY = "svc-SECRET-6d1f0a"
LLM_KEY = "sk-llm-SECRET-93bc"
RESEARCH_TOKEN = "research-SECRET-51aa"
DEEP_RESEARCH_KEY = "deep-research-SECRET-0c3d"
DB_PASSWORD = "db-SECRET-77e2"


def _pem() -> tuple[str, list[str]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return pem, [line for line in pem.splitlines() if not line.startswith("-----")]


def _with_password(dsn: str) -> str:
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    return urlunsplit((parts.scheme, f"{user}:{DB_PASSWORD}@{parts.hostname or ''}", parts.path, parts.query, ""))


async def test_no_credential_reaches_any_output(tmp_path: Path, db_dsn: str, pg: PgServer) -> None:
    database = urlsplit(db_dsn).path[1:]
    pem, pem_lines = _pem()
    # the first also asks for deep research: mana-research is down too, so it is planned at once
    for i, objective in enumerate(["Deep research: finde aktuelle news", "Plan my week", "Plan again"]):
        data = json.dumps({"id": f"m{i}", "title": "T", "state": "active", "objective": objective,
                           "nextRunAt": "2026-01-01T00:00:00.000Z", "agentId": "a1"})
        pg.sql("INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id) "
               f"VALUES ('ai', 'aiMissions', 'm{i}', 'u-1', 'insert', '{data}', 'device')", database)
    pg.sql("INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id) VALUES "
           "('ai', 'agents', 'a1', 'u-1', 'insert', '{\"id\": \"a1\", \"name\": \"A\", \"maxConcurrentMissions\": 3}',"
           " 'device')", database)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        research_port = s.getsockname()[1]  # nothing listens: research fails
    # the LLM first refuses, echoing the key it got (as some providers do), then plans
    async with running_fake_llm(Reply(status=401, body=f"invalid api key {LLM_KEY}"), plan_reply([CREATE_TASK])) as llm:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = daemon_env(PORT=str(port), MANA_AI_HOST="127.0.0.1", SYNC_DATABASE_URL=_with_password(db_dsn),
                         MANA_SERVICE_KEY=SERVICE_KEY, MANA_LLM_URL=llm.url, MANA_AI_LLM_API_KEY=LLM_KEY,
                         MANA_AI_RESEARCH_TOKEN=RESEARCH_TOKEN, MANA_API_URL=f"http://127.0.0.1:{research_port}",
                         MANA_AI_DEEP_RESEARCH="true", MANA_RESEARCH_URL=f"http://127.0.0.1:{research_port}",
                         MANA_AI_RESEARCH_SERVICE_KEY=DEEP_RESEARCH_KEY,
                         MANA_AI_PRIVATE_KEY_PEM=pem, TICK_ENABLED="false", MANA_AI_SNAPSHOT_LAG_MS="0",
                         MANA_AI_LLM_RETRIES="0", MANA_AI_RETRY_BASE_S="0", MANA_AI_LOG_LEVEL="debug")
        daemon = Daemon(tmp_path, [], env)
        process = await daemon.start()
        await wait_healthy(url, daemon=daemon)
        outputs: list[str] = []
        headers = {"X-Service-Key": SERVICE_KEY}
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for _ in range(2):  # the first tick fails on the LLM, the second plans
                outputs.append((await client.post("/internal/tick", headers=headers)).text)
            for path in ("/health", "/metrics", "/internal/agents", "/internal/agents/u-1/a1",
                         "/internal/missions/u-1", "/internal/rejected"):
                response = await client.get(path, headers=headers)
                assert response.status_code == 200, (path, response.text)
                outputs.append(response.text)
        process.send_signal(signal.SIGTERM)
        assert await daemon.wait() == 0, daemon.log()
        assert [h.get("authorization") for h in llm.headers][:1] == [f"Bearer {LLM_KEY}"]  # it was sent there
    assert pg.sql("SELECT count(*) FROM sync_changes WHERE client_id = 'mana-ai-runner'", database) == "3"
    assert "mana-llm 401: invalid api key ***" in outputs[0]  # the echoed key was starred
    outputs.append(daemon.log())
    tables = pg.sql("SELECT string_agg(table_name, ' ') FROM information_schema.tables "
                    "WHERE table_schema = 'mana_ai'", database).split()
    assert {"mission_runs", "mission_snapshots", "token_usage", "decrypt_audit"} <= set(tables)
    for table in tables:
        outputs.append(pg.sql(f"SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM mana_ai.{table} t", database))
    outputs.append(pg.sql("SELECT string_agg(t::text, E'\\n') FROM sync_changes t "
                          "WHERE client_id = 'mana-ai-runner'", database))
    everything = "\n".join(outputs)
    assert "mana-ai-runner" in everything and "mission.planned" in everything  # we searched real output
    assert "research_job.call_failed" in everything  # the deep-research path ran
    for secret in (SERVICE_KEY, LLM_KEY, RESEARCH_TOKEN, DEEP_RESEARCH_KEY, DB_PASSWORD, *pem_lines):
        assert secret not in everything, f"{secret[:12]}… leaked"
