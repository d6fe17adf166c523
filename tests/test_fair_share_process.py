"""Fair share of the LLM slots, against the daemon as a process: a heavy user's backlog does
not push light users' missions back behind all of its own."""

from __future__ import annotations

import dataclasses
import json
import re
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

LATENCY_S = 0.3
HEAVY_AGENTS, HEAVY_PER_AGENT, LIGHT_USERS = 20, 10, 10


def _row(table: str, record_id: str, user: str, data: dict[str, Any]) -> str:
    body = json.dumps(data).replace("'", "''")
    return (f"('ai', '{table}', '{record_id}', '{user}', 'insert', '{body}'::jsonb, '{{}}'::jsonb, 'device',"
            " now() - interval '1 minute')")


def _mission(mission_id: str, user: str, agent: str, title: str, next_run_at: str) -> str:
    return _row("aiMissions", mission_id, user, {
        "id": mission_id, "title": title, "conceptMarkdown": "Fair", "objective": "Plan it", "inputs": [],
        "iterations": [], "state": "active", "nextRunAt": next_run_at, "agentId": agent,
        "cadence": {"kind": "interval", "everyMinutes": 60}})


def _agent(agent: str, user: str, slots: int) -> str:
    return _row("agents", agent, user, {"id": agent, "name": agent, "role": "Fair", "state": "active",
                                        "maxConcurrentMissions": slots,
                                        "policy": {"tools": {}, "defaultForAi": "propose"}})


def seed_scenario(pg: PgServer, database: str) -> None:
    """One heavy user (20 agents of 2 slots, 10 due missions each, due first) and ten light
    users with one agent and one due mission each (due a minute later)."""
    rows = []
    for a in range(HEAVY_AGENTS):
        rows.append(_agent(f"heavy-agent-{a}", "heavy", 2))
        rows += [_mission(f"heavy-{a}-{m}", "heavy", f"heavy-agent-{a}", f"heavy mission {a}-{m}",
                          "2026-01-01T00:00:00.000Z") for m in range(HEAVY_PER_AGENT)]
    for u in range(LIGHT_USERS):
        rows.append(_agent(f"light-agent-{u}", f"light-{u}", 1))
        rows.append(_mission(f"light-{u}", f"light-{u}", f"light-agent-{u}", f"light mission {u}",
                             "2026-01-01T00:01:00.000Z"))
    pg.sql("INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_timestamps,"
           " client_id, created_at) VALUES " + ", ".join(rows), database)


async def test_light_users_are_served_within_the_first_two_waves(tmp_path: Path, db_dsn: str,
                                                                 pg: PgServer) -> None:
    seed_scenario(pg, urlsplit(db_dsn).path[1:])
    arrivals: dict[str, float] = {}
    first: list[float] = []

    def respond(body: dict[str, Any]) -> Reply:
        now = trio.current_time()
        if not first:
            first.append(now)
        text = json.dumps(body.get("messages"))
        found = re.search(r"light mission (\d+)", text)
        if found is not None:
            arrivals.setdefault(found.group(1), now - first[0])
        return dataclasses.replace(plan_reply([]), delay_s=LATENCY_S)

    total = HEAVY_AGENTS * HEAVY_PER_AGENT + LIGHT_USERS
    async with running_fake_llm() as llm:
        llm.responder = respond
        env = daemon_env(PORT=str(free_port()), SYNC_DATABASE_URL=db_dsn, MANA_AI_HOST="127.0.0.1",
                         MANA_LLM_URL=llm.url, MANA_AI_LLM_CONCURRENCY="8", MANA_AI_LOG_LEVEL="warning",
                         MANA_AI_GRACE_S="0.5")
        daemon = Daemon(tmp_path, [], env)
        process = await daemon.start()
        try:
            with trio.fail_after(90):  # the first cycle, at start, plans them all
                while len(arrivals) < LIGHT_USERS or len(llm.requests) < total:
                    if process.returncode is not None:
                        raise AssertionError(f"the daemon exited:\n{daemon.log()}")
                    await trio.sleep(0.05)
        finally:
            process.send_signal(signal.SIGTERM)
            await daemon.wait(timeout=30)
    waits = sorted(arrivals.values())
    print(f"light users' first request after the cycle's first: {[round(w, 2) for w in waits]}")
    assert max(waits) <= 2 * LATENCY_S + 0.25, (
        f"light users waited up to {max(waits):.2f}s (two waves are {2 * LATENCY_S:.1f}s): {waits}")
