"""The daemon as a process against an LLM upstream that takes requests and resets connections.

A paid request must reach the LLM exactly once per try: ``1 + MANA_AI_LLM_RETRIES`` tries per
attempt, ``MANA_AI_MAX_ATTEMPTS`` attempts per slot, counted at the upstream.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio

from conftest import PgServer
from fake_llm import plan_reply
from raw_http import Peer, raw_server
from test_daemon_process import Daemon, daemon_env, free_port

pytestmark = pytest.mark.slow

PLAN_BODY = json.dumps(plan_reply([]).body).encode()
LEDGER = ("SELECT string_agg(mission_id || ':' || status || ':' || attempts, ',' ORDER BY mission_id) "
          "FROM mana_ai.mission_runs")


async def test_a_request_the_upstream_read_and_reset_is_sent_once_per_try(
        tmp_path: Path, db_dsn: str, pg: PgServer) -> None:
    """Four users' missions are answered and leave four keep-alive connections in the pool;
    the upstream reads every request of a fifth mission to the end and then resets the
    connection (RST), as a proxy whose idle timeout is shorter than a generation does. With
    2 retries and 3 attempts that mission costs exactly 9 requests, then its slot is dead;
    the others cost one each."""
    database = urlsplit(db_dsn).path[1:]
    past = (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat()
    missions = [(f"u-{i}", f"m{i}", f"answer-me-{i}") for i in range(1, 5)] + [("u-5", "m5", "reset-me")]
    for user, mission_id, objective in missions:
        data = {"id": mission_id, "title": "T", "objective": objective, "state": "active",
                "nextRunAt": "2026-01-01T00:00:00.000Z"}
        pg.sql("INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id, created_at) "
               f"VALUES ('ai', 'aiMissions', '{mission_id}', '{user}', 'insert', '{json.dumps(data)}', 'device', "
               f"'{past}')", database)

    requests: Counter[str] = Counter()
    answered = trio.Event()

    async def upstream(peer: Peer) -> None:
        while await peer.read_request() is not None:
            body = peer.body.decode()
            if "reset-me" in body:
                requests["reset-me"] += 1
                await answered.wait()           # the pool holds the others' connections first
                peer.reset()
                return
            requests["answer-me"] += 1
            if requests["answer-me"] == 4:
                answered.set()
            await peer.respond(body=PLAN_BODY)

    async with raw_server(upstream) as server:
        env = daemon_env(PORT=str(free_port()), SYNC_DATABASE_URL=db_dsn, MANA_AI_HOST="127.0.0.1",
                         MANA_LLM_URL=server.url, MANA_AI_LLM_RETRIES="2", MANA_AI_MAX_ATTEMPTS="3",
                         MANA_AI_RETRY_BASE_S="0.05", MANA_AI_RETRY_MAX_S="0.1",
                         TICK_INTERVAL_MS="200",  # a retry is due within a tick
                         MANA_AI_LLM_STARTUP_PROBE="false")  # count the missions' requests only
        daemon = Daemon(tmp_path, [], env)
        process = await daemon.start()
        try:
            with trio.move_on_after(60) as waiting:
                while pg.sql("SELECT count(*) FROM mana_ai.mission_runs WHERE mission_id = 'm5' "
                             "AND status = 'dead'", database) != "1":
                    assert process.returncode is None, daemon.log()
                    await trio.sleep(0.1)
            assert not waiting.cancelled_caught, (requests, pg.sql(LEDGER, database), daemon.log())
        finally:
            process.terminate()
            await daemon.wait()
    assert requests == {"answer-me": 4, "reset-me": 9}, f"{dict(requests)}\n{daemon.log()}"
    assert pg.sql(LEDGER, database) == "m1:planned:1,m2:planned:1,m3:planned:1,m4:planned:1,m5:dead:3"
