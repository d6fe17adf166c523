"""Dead slots recovered in bulk, against the daemon as a process: the ledger gauge counts slots
dead once their cycle has settled (not `running` until the next cycle), a bulk retry of one
agent's slots runs them again at once and leaves another user's alone, and a bulk discard of
all shows in the gauge at once."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from conftest import PgServer
from fake_llm import Reply, completion, running_fake_llm
from test_daemon_process import Daemon, daemon_env, free_port, wait_healthy

pytestmark = pytest.mark.slow

KEY = {"X-Service-Key": "process-test-service-key"}
MISSIONS = [("u-a", "a1", "m1"), ("u-a", "a1", "m2"), ("u-a", "a2", "m3"), ("u-b", "a1", "m4"), ("u-b", "a1", "m5")]


def seed(pg: PgServer, database: str) -> None:
    rows = []
    for user, agent, mission in MISSIONS:
        data = json.dumps({"id": mission, "title": mission, "conceptMarkdown": "Dead", "objective": "Plan it",
                           "inputs": [], "iterations": [], "state": "active", "agentId": agent,
                           "nextRunAt": "2026-01-01T00:00:00.000Z", "cadence": {"kind": "interval", "everyMinutes": 60}})
        rows.append(f"('ai', 'aiMissions', '{mission}', '{user}', 'insert', '{data}'::jsonb, '{{}}'::jsonb, 'device',"
                    " now() - interval '1 minute')")
    pg.sql("INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_timestamps,"
           " client_id, created_at) VALUES " + ", ".join(rows), database)


def ledger(metrics: str) -> dict[str, float]:
    found = {}
    for line in metrics.splitlines():
        if line.startswith("mana_ai_run_ledger_slots{"):
            labels, value = line.rsplit(" ", 1)
            status = labels.split('status="')[1].split('"')[0]
            found[status] = float(value)
    return found


async def cycles_completed(client: httpx.AsyncClient, url: str) -> int:
    return int((await client.get(f"{url}/health")).json()["checks"]["cyclesCompleted"])


async def test_dead_slots_counted_when_settled_and_recovered_in_bulk(tmp_path: Path, db_dsn: str,
                                                                    pg: PgServer) -> None:
    seed(pg, urlsplit(db_dsn).path[1:])
    asked: list[str] = []
    seven = trio.Event()

    def respond(body: dict[str, Any]) -> Reply:  # the mission's own bad answer: its only attempt fails
        asked.append(json.dumps(body.get("messages")))
        if len(asked) == 7:
            seven.set()
        return completion("just prose, no plan")

    async with running_fake_llm() as llm, httpx.AsyncClient(timeout=30) as client:
        llm.responder = respond
        url = f"http://127.0.0.1:{free_port()}"
        env = daemon_env(PORT=url.rsplit(":", 1)[1], SYNC_DATABASE_URL=db_dsn, MANA_AI_HOST="127.0.0.1",
                         MANA_LLM_URL=llm.url, MANA_SERVICE_KEY=KEY["X-Service-Key"], MANA_AI_MAX_ATTEMPTS="1",
                         TICK_INTERVAL_MS="3600000", MANA_AI_LOG_LEVEL="warning", MANA_AI_GRACE_S="0.5")
        daemon = Daemon(tmp_path, [], env)
        process = await daemon.start()
        try:
            await wait_healthy(url, daemon=daemon)
            with trio.fail_after(30):  # the first cycle, at start, runs all five: each dies
                while await cycles_completed(client, url) < 1:
                    await trio.sleep(0.05)
            assert len(asked) == 5
            assert ledger((await client.get(f"{url}/metrics")).text) == {"running": 0, "backing-off": 0, "dead": 5}

            listed = (await client.get(f"{url}/internal/dead-slots", headers=KEY)).json()["deadSlots"]
            assert [s["missionId"] for s in listed] == ["m1", "m2", "m3", "m4", "m5"]
            retried = await client.post(f"{url}/internal/dead-slots/retry", headers=KEY,
                                        json={"userId": "u-a", "agentId": "a1"})
            assert (retried.json()["retried"], retried.json()["superseded"]) == (2, 0)
            with trio.fail_after(15):  # due now: the scheduler wakes (not in an hour), both die again
                await seven.wait()
            with trio.fail_after(15):
                while await cycles_completed(client, url) < 2:
                    await trio.sleep(0.05)
            assert len(asked) == 7 and ledger((await client.get(f"{url}/metrics")).text)["dead"] == 5
            after = (await client.get(f"{url}/internal/dead-slots", headers=KEY)).json()["deadSlots"]
            changed = [a["missionId"] for a, b in zip(after, listed) if a != b]
            assert changed == ["m1", "m2"]  # died again, later; agent a2's and u-b's untouched

            discarded = await client.post(f"{url}/internal/dead-slots/discard", headers=KEY, json={"all": True})
            assert discarded.json()["discarded"] == 5
            assert ledger((await client.get(f"{url}/metrics")).text)["dead"] == 0  # at once, no cycle ran
        finally:
            process.send_signal(signal.SIGTERM)
            assert await daemon.wait(timeout=30) == 0, daemon.log()
