"""The daemon as a process through repeated database failovers: it never exits, loses nothing.

Each failover cuts every connection (as a Postgres restart or a `pg_terminate_backend` does)
and refuses new ones for a while; the daemon reaches Postgres over TCP, where asyncpg's
aborted connection attempts leave errors that nobody awaits (see store/bridge.py).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from conftest import PgServer
from fake_llm import plan_reply, running_fake_llm
from pg_proxy import pg_tcp_proxy
from planning import CREATE_TASK
from test_daemon_process import Daemon, daemon_env, free_port, wait_healthy

pytestmark = pytest.mark.slow
KEY = {"X-Service-Key": "dev-service-key"}


def _insert_mission(pg: PgServer, database: str, mission_id: str) -> None:
    data = json.dumps({"id": mission_id, "title": "T", "state": "active", "nextRunAt": "2026-01-01T00:00:00.000Z"})
    pg.sql("INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id) "
           f"VALUES ('ai', 'aiMissions', '{mission_id}', 'u-1', 'insert', '{data}', 'device')", database)


async def test_repeated_failovers_neither_end_the_daemon_nor_lose_or_duplicate_a_plan(
        tmp_path: Path, db_dsn: str, pg: PgServer) -> None:
    database = urlsplit(db_dsn).path[1:]
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm, pg_tcp_proxy(db_dsn) as proxy:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = daemon_env(PORT=str(port), SYNC_DATABASE_URL=proxy.dsn, MANA_AI_HOST="127.0.0.1",
                         MANA_LLM_URL=llm.url, TICK_INTERVAL_MS="200", MANA_AI_SNAPSHOT_LAG_MS="0",
                         MANA_AI_DB_CONNECT_TIMEOUT_S="30")
        daemon = Daemon(tmp_path, [], env)
        process = await daemon.start()
        await wait_healthy(url, daemon=daemon)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for round_ in range(4):
                _insert_mission(pg, database, f"m{round_}")
                proxy.cut()
                proxy.refusing = True
                await trio.sleep(1.5)  # cycles fail meanwhile, connection attempts are aborted
                assert process.returncode is None, daemon.log()
                proxy.refusing = False
                with trio.fail_after(30):  # recovered: healthy, and this round's mission planned
                    while True:
                        if (await client.get("/health")).status_code == 200:
                            written = pg.sql("SELECT count(*) FROM sync_changes "
                                             f"WHERE client_id = 'mana-ai-runner' AND record_id = 'm{round_}'",
                                             database)
                            if written == "1":
                                break
                        await trio.sleep(0.1)
            metrics = (await client.get("/metrics")).text
        assert process.returncode is None, daemon.log()
        process.send_signal(signal.SIGTERM)
        assert await daemon.wait(timeout=15) == 0, daemon.log()
    assert proxy.accepted > 4
    rows = pg.sql("SELECT record_id || '=' || count(*) FROM sync_changes WHERE client_id = 'mana-ai-runner' "
                  "GROUP BY record_id ORDER BY 1", database).splitlines()
    assert rows == ["m0=1", "m1=1", "m2=1", "m3=1"]  # nothing lost, nothing twice
    assert pg.sql("SELECT count(*) FROM mana_ai.mission_runs WHERE status <> 'planned'", database) == "0"
    assert "mana_ai_cycle_errors_total" in metrics
