"""An LLM outage longer than the whole retry schedule, against the daemon as a process: the
missions that were due are parked (no attempt used) and planned once the LLM is back."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio

from conftest import PgServer
from fake_llm import Reply, plan_reply, running_fake_llm
from test_daemon_process import Daemon, daemon_env, free_port

pytestmark = pytest.mark.slow

USERS = 6
OUTAGE_S = 5.0  # from the first request; the retry schedule below is over in about 3 s


def _row(table: str, record_id: str, user: str, data: dict[str, Any]) -> str:
    body = json.dumps(data).replace("'", "''")
    return (f"('ai', '{table}', '{record_id}', '{user}', 'insert', '{body}'::jsonb, '{{}}'::jsonb, 'device',"
            " now() - interval '1 minute')")


def seed_users(pg: PgServer, database: str, users: int) -> None:
    """Each user: one agent and one mission that is due now."""
    rows = []
    for u in range(users):
        user, agent, mission = f"user-{u}", f"agent-{u}", f"mission-{u}"
        rows.append(_row("agents", agent, user, {"id": agent, "name": agent, "role": "Outage", "state": "active",
                                                 "maxConcurrentMissions": 1,
                                                 "policy": {"tools": {}, "defaultForAi": "propose"}}))
        rows.append(_row("aiMissions", mission, user, {
            "id": mission, "title": f"mission of {user}", "conceptMarkdown": "Outage", "objective": "Plan it",
            "inputs": [], "iterations": [], "state": "active", "nextRunAt": "2026-01-01T00:00:00.000Z",
            "agentId": agent, "cadence": {"kind": "interval", "everyMinutes": 60}}))
    pg.sql("INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_timestamps,"
           " client_id, created_at) VALUES " + ", ".join(rows), database)


def slot_statuses(pg: PgServer, database: str) -> dict[str, int]:
    out = pg.sql("SELECT status, count(*) FROM mana_ai.mission_runs GROUP BY status", database)
    return {status: int(n) for status, n in (line.split("|") for line in out.splitlines() if line)}


async def test_an_outage_longer_than_the_retry_schedule_parks_missions_instead_of_killing_them(
        tmp_path: Path, db_dsn: str, pg: PgServer) -> None:
    database = urlsplit(db_dsn).path[1:]
    seed_users(pg, database, USERS)
    outage: dict[str, float] = {}
    during_outage: list[str] = []  # the user of each request sent while the LLM was down
    after: list[str] = []

    def respond(body: dict[str, Any]) -> Reply:
        now = trio.current_time()
        outage.setdefault("started", now)
        text = json.dumps(body.get("messages"))
        user = next((f"user-{u}" for u in range(USERS) if f"mission of user-{u}" in text), "probe")
        if now - outage["started"] < OUTAGE_S:
            during_outage.append(user)
            return Reply(status=503, body="upstream unavailable")
        after.append(user)
        return plan_reply([])

    async with running_fake_llm() as llm:
        llm.responder = respond
        env = daemon_env(PORT=str(free_port()), SYNC_DATABASE_URL=db_dsn, MANA_AI_HOST="127.0.0.1",
                         MANA_LLM_URL=llm.url, MANA_AI_LOG_LEVEL="info", MANA_AI_GRACE_S="0.5",
                         MANA_AI_MAX_ATTEMPTS="3", MANA_AI_RETRY_BASE_S="1", MANA_AI_RETRY_MAX_S="2",
                         MANA_AI_LLM_RETRIES="0")
        daemon = Daemon(tmp_path, [], env)
        process = await daemon.start()
        try:
            with trio.fail_after(40):
                # the outage ends, then every slot settles: planned, or dead
                while True:
                    if process.returncode is not None:
                        raise AssertionError(f"the daemon exited:\n{daemon.log()}")
                    statuses = slot_statuses(pg, database)
                    ended = "started" in outage and trio.current_time() - outage["started"] > OUTAGE_S
                    settled = statuses.get("planned", 0) + statuses.get("dead", 0)
                    if ended and settled == USERS:
                        break
                    await trio.sleep(0.2)
        finally:
            process.send_signal(signal.SIGTERM)
            await daemon.wait(timeout=30)
    missions = [user for user in during_outage if user != "probe"]
    print(f"slots: {statuses}; requests during the outage: {len(during_outage)} "
          f"({len(missions)} missions', {len(during_outage) - len(missions)} probes); after: {len(after)}")
    attempts = pg.sql("SELECT max(attempts) FROM mana_ai.mission_runs", database)
    assert statuses.get("dead", 0) == 0, (
        f"{statuses.get('dead')} of {USERS} slots died in an outage of {OUTAGE_S:g}s "
        f"({len(during_outage)} requests sent during it)")
    assert statuses == {"planned": USERS}
    assert sorted(u for u in after if u != "probe") == sorted(f"user-{u}" for u in range(USERS)), after
    assert int(attempts) < 3, f"attempts used up to {attempts} of 3"
    assert len(missions) <= USERS, f"{len(missions)} mission requests during the outage"
