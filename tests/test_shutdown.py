"""SIGTERM during a manual tick: one grace period in total, no new work, the tick answered."""

from __future__ import annotations

import dataclasses
import json
import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from conftest import PgServer
from fake_llm import plan_reply, running_fake_llm
from planning import CREATE_TASK
from test_daemon_process import Daemon, daemon_env, free_port, wait_healthy

pytestmark = pytest.mark.slow
GRACE_S = 3.0


def _seed_missions(pg: PgServer, database: str, count: int) -> None:
    past = (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat()
    values = []
    for i in range(count):
        data = json.dumps({"id": f"m{i}", "title": "T", "state": "active",
                           "nextRunAt": "2026-01-01T00:00:00.000Z"})
        values.append(f"('ai', 'aiMissions', 'm{i}', 'u-{i % 10}', 'insert', '{data}', 'device', '{past}')")
    pg.sql("INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id, created_at) "
           f"VALUES {', '.join(values)}", database)


async def test_sigterm_during_a_manual_tick_takes_one_grace_period_and_starts_nothing_new(
        tmp_path: Path, db_dsn: str, pg: PgServer) -> None:
    database = urlsplit(db_dsn).path[1:]
    _seed_missions(pg, database, 30)
    async with running_fake_llm(dataclasses.replace(plan_reply([CREATE_TASK]), delay_s=1.0)) as llm:
        port = free_port()
        env = daemon_env(PORT=str(port), SYNC_DATABASE_URL=db_dsn, MANA_AI_HOST="127.0.0.1",
                         MANA_LLM_URL=llm.url, TICK_ENABLED="false", MANA_AI_GRACE_S=str(GRACE_S),
                         MANA_AI_LLM_CONCURRENCY="4")
        daemon = Daemon(tmp_path, [], env)
        process = await daemon.start()
        await wait_healthy(f"http://127.0.0.1:{port}", daemon=daemon)
        answer: list[httpx.Response] = []

        async def tick() -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                answer.append(await client.post(f"http://127.0.0.1:{port}/internal/tick",
                                                 headers={"X-Service-Key": "dev-service-key"}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            with trio.fail_after(20):
                while llm.in_flight < 4:  # four LLM calls in flight, the other missions wait
                    await trio.sleep(0.02)
            await trio.sleep(0.2)
            started_before = len(llm.requests)
            signalled = trio.current_time()
            process.send_signal(signal.SIGTERM)
            code = await daemon.wait(timeout=3 * GRACE_S)
            elapsed = trio.current_time() - signalled
        log = daemon.log()
        assert code == 0, log
        assert elapsed < GRACE_S + 1.0, f"exit {elapsed:.2f}s after SIGTERM (grace {GRACE_S}s)"
        assert len(llm.requests) == started_before, "LLM calls started after SIGTERM"
        assert answer and answer[0].status_code == 200, log
        stats = answer[0].json()
    written = int(pg.sql("SELECT count(*) FROM sync_changes WHERE client_id = 'mana-ai-runner'", database))
    assert stats["dueMissionCount"] == 30
    assert stats["plansWrittenBack"] == written == started_before  # the in-flight ones finished
    ledger = pg.sql("SELECT status || ':' || attempts || ':' || released || '=' || n FROM "
                    "(SELECT status, attempts, lease_token IS NULL AS released, count(*) AS n "
                    "FROM mana_ai.mission_runs GROUP BY 1, 2, 3) AS g ORDER BY 1", database).splitlines()
    # the rest was handed back at once: no attempt used, no lease held, due again for anyone
    assert ledger == [f"planned:1:true={written}", f"retry:0:true={30 - written}"], ledger
