"""The daemon as a process behind a real PgBouncer in transaction pooling, with fewer server
connections than the daemon's pool: every due mission is planned and written back once.

Consecutive transactions of one of the daemon's connections run on whichever server connection
PgBouncer has free, so nothing may outlive a transaction on the server side: no named prepared
statement, no session setting, no session advisory lock, no LISTEN.
"""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from conftest import PgServer
from console_seed import log_in
from fake_llm import Reply, plan_reply, running_fake_llm
from pgbouncer import PgBouncer, pgbouncer_binary, running_pgbouncer
from test_daemon_process import Daemon, daemon_env, free_port, wait_healthy

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    pgbouncer_binary() is None,
    reason="pgbouncer is not installed (Debian: apt-get install pgbouncer; .ci/run installs it)")]

MISSIONS, AGENTS, USERS = 40, 8, 4
SERVER_CONNECTIONS = 3  # PgBouncer's default_pool_size: fewer than the daemon's pool
DAEMON_POOL = 10
LLM_DELAY_S = 0.5  # together: missions outlive a third of the 1 s lease, so their leases are renewed
KEY = "pooler-test-service-key"


def _row(table: str, record_id: str, user: str, data: dict[str, Any]) -> str:
    body = json.dumps(data).replace("'", "''")
    return (f"('ai', '{table}', '{record_id}', '{user}', 'insert', '{body}'::jsonb, '{{}}'::jsonb, 'device',"
            " now() - interval '1 minute')")


def seed(pg: PgServer, database: str) -> None:
    """MISSIONS due missions over AGENTS agents (of USERS users), every agent with room for all of its own."""
    per_agent = MISSIONS // AGENTS
    rows = []
    for a in range(AGENTS):
        user, agent = f"u-{a % USERS}", f"agent-{a}"
        rows.append(_row("agents", agent, user, {"id": agent, "name": agent, "role": "Plans", "state": "active",
                                                  "maxConcurrentMissions": per_agent,
                                                  "policy": {"tools": {}, "defaultForAi": "propose"}}))
        for m in range(per_agent):
            mission = f"m-{a}-{m}"
            rows.append(_row("aiMissions", mission, user, {
                "id": mission, "title": f"Mission {mission}", "conceptMarkdown": "Pooled", "objective": "Plan it",
                "inputs": [], "iterations": [], "state": "active", "nextRunAt": "2026-01-01T00:00:00.000Z",
                "agentId": agent, "cadence": {"kind": "interval", "everyMinutes": 60}}))
    pg.sql("INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_timestamps,"
           " client_id, created_at) VALUES " + ", ".join(rows), database)


@dataclasses.dataclass(frozen=True)
class Outcome:
    planned: int  # missions with exactly one planned run and exactly one write-back
    failed: int  # the others
    open_runs: int  # runs still running (in flight)
    renewed: int  # of those, runs whose lease was renewed (expires more than a lease after the claim)
    errors: list[str]

    def line(self) -> str:
        return f"planned {self.planned}/{MISSIONS}, failed {self.failed}; errors: {self.errors[:3]}"


async def outcome(pg: PgServer, database: str) -> Outcome:
    return await trio.to_thread.run_sync(_outcome, pg, database)  # the fake LLM runs in this process


def _outcome(pg: PgServer, database: str) -> Outcome:
    rows = pg.sql(
        "SELECT s.record_id,"
        " (SELECT count(*) FROM mana_ai.mission_runs r WHERE r.mission_id = s.record_id AND r.status = 'planned'),"
        " (SELECT count(*) FROM sync_changes w WHERE w.record_id = s.record_id AND w.client_id = 'mana-ai-runner')"
        " FROM sync_changes s WHERE s.table_name = 'aiMissions' AND s.client_id = 'device'", database)
    once = sum(1 for line in rows.splitlines() if line.split("|")[1:] == ["1", "1"])
    open_runs, renewed = (int(n) for n in pg.sql(
        "SELECT count(*), count(*) FILTER (WHERE lease_expires_at > created_at + interval '1.2 seconds')"
        " FROM mana_ai.mission_runs WHERE status = 'running'", database).split("|"))
    errors = pg.sql("SELECT DISTINCT left(split_part(last_error, E'\n', 1), 160) FROM mana_ai.mission_runs"
                    " WHERE last_error IS NOT NULL", database)
    return Outcome(once, MISSIONS - once, open_runs, renewed, [e for e in errors.splitlines() if e])


async def tick(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post("/internal/tick", headers={"X-Service-Key": KEY})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def browse_console(client: httpx.AsyncClient, stop: trio.Event, failures: list[str]) -> int:
    """Log in to the console and read its pages and the inspection JSON until `stop`; the pages
    read. Every answer but a 200 goes to `failures`."""
    assert (await log_in(client, KEY)).status_code in (302, 303)
    pages = 0
    paths = ["/ui", "/ui/missions/u-0", "/ui/dead", "/ui/live/overview", "/ui/live/missions/u-1",
             "/internal/agents", "/internal/missions/u-2", "/health"]
    while not stop.is_set():
        for path in paths:
            response = await client.get(path, headers={"X-Service-Key": KEY})
            pages += 1
            if response.status_code != 200:
                failures.append(f"{path}: {response.status_code}")
    return pages


def pooled_env(bouncer: PgBouncer, database: str, llm_url: str, **extra: str) -> dict[str, str]:
    settings = dict(PORT=str(free_port()), SYNC_DATABASE_URL=bouncer.dsn(database), MANA_AI_HOST="127.0.0.1",
                    MANA_SERVICE_KEY=KEY, MANA_LLM_URL=llm_url, MANA_AI_LLM_CONCURRENCY="8",
                    MANA_AI_DB_POOL_SIZE=str(DAEMON_POOL), MANA_AI_LOG_LEVEL="warning", MANA_AI_GRACE_S="0.5",
                    MANA_AI_SNAPSHOT_LAG_MS="0", MANA_AI_DB_POOLER="transaction",
                    MANA_AI_RETRY_BASE_S="600")  # a failed write-back stays failed within the test
    return daemon_env(**{**settings, **extra})


async def run_scenario(tmp_path: Path, pg: PgServer, database: str, *, together: bool) -> tuple[Outcome, str]:
    """Seed, run the daemon behind PgBouncer, three manual ticks (`together`: at once, with the
    scheduler every 200 ms, 1 s leases renewed every third of a second and the console read
    meanwhile); the outcome once no mission is in flight, and the daemon's log."""
    seed(pg, database)
    failures: list[str] = []  # console reads answered other than 200
    pages: list[int] = []
    renewed = 0  # the most runs seen in flight at once with a renewed lease
    async with running_pgbouncer(pg.admin_dsn, pool_mode="transaction", pool_size=SERVER_CONNECTIONS) as bouncer, \
            running_fake_llm(dataclasses.replace(plan_reply([]), delay_s=LLM_DELAY_S if together else 0)) as llm:
        extra = ({"TICK_ENABLED": "true", "TICK_INTERVAL_MS": "200", "MANA_AI_LEASE_S": "1"} if together
                 else {"TICK_ENABLED": "false"})
        env = pooled_env(bouncer, database, llm.url, **extra)
        daemon = Daemon(tmp_path, [], env)
        process = await daemon.start()
        url = f"http://127.0.0.1:{env['PORT']}"
        try:
            await wait_healthy(url, daemon=daemon, timeout=30)
            stop = trio.Event()

            async def browse() -> None:
                async with httpx.AsyncClient(base_url=url, timeout=60) as console:
                    pages.append(await browse_console(console, stop, failures))

            async def watch_leases() -> None:
                nonlocal renewed
                while not stop.is_set():  # another process's rows: nothing to wait on but them
                    renewed = max(renewed, (await outcome(pg, database)).renewed)
                    await trio.sleep(0.1)

            with trio.fail_after(40):
                async with trio.open_nursery() as nursery, httpx.AsyncClient(base_url=url, timeout=60) as client:
                    if together:
                        nursery.start_soon(browse)
                        nursery.start_soon(watch_leases)
                    async with trio.open_nursery() as ticks:
                        for _ in range(3):
                            if together:
                                ticks.start_soon(tick, client)
                            else:
                                await tick(client)
                    # the scheduler's cycles may still run missions: wait until none is in flight
                    # (bounded: a run whose ledger write was lost stays `running` until its lease ends)
                    with trio.move_on_after(8):
                        while (await outcome(pg, database)).open_runs:
                            await trio.sleep(0.1)
                    stop.set()
        finally:
            process.send_signal(signal.SIGTERM)
            code = await daemon.wait(timeout=30)
        assert code == 0, daemon.log()[-3000:]
    result = await outcome(pg, database)
    print(f"behind PgBouncer (transaction, {SERVER_CONNECTIONS} server connections):", result.line())
    if together:
        print(f"console: {sum(pages)} reads, {len(failures)} failed {sorted(set(failures))};"
              f" up to {renewed} runs in flight at once with a renewed lease")
        assert sum(pages) > 0 and renewed > 0, "the console and the lease renewals did not run meanwhile"
    assert not failures, f"{len(failures)} console reads failed: {sorted(set(failures))}; {result.line()}"
    return result, daemon.log()


def database_of(dsn: str) -> str:
    return urlsplit(dsn).path[1:]


async def test_three_manual_ticks_plan_every_mission_once(tmp_path: Path, db_dsn: str, pg: PgServer) -> None:
    result, log = await run_scenario(tmp_path, pg, database_of(db_dsn), together=False)
    assert result.planned == MISSIONS and not result.errors, result.line()
    assert "does not exist" not in log, log[-3000:]


async def test_scheduler_ticks_leases_and_console_together(tmp_path: Path, db_dsn: str, pg: PgServer) -> None:
    result, log = await run_scenario(tmp_path, pg, database_of(db_dsn), together=True)
    assert result.planned == MISSIONS and not result.errors, result.line()
    assert "does not exist" not in log, log[-3000:]


async def _notify_scenario(tmp_path: Path, pg: PgServer, db_dsn: str, **extra: str) -> tuple[bool, dict[str, Any], str]:
    """The daemon behind PgBouncer with NOTIFY on and a cycle only every minute; a due mission
    written after start when NOTIFY is enabled. Whether the LLM was asked for it within 5 s (only
    a notification can wake the daemon that soon), /health's notify state, and the daemon's log."""
    database = database_of(db_dsn)
    asked = trio.Event()

    def respond(_body: dict[str, Any]) -> Reply:
        asked.set()
        return plan_reply([])

    async with running_pgbouncer(pg.admin_dsn, pool_mode="transaction", pool_size=SERVER_CONNECTIONS) as bouncer, \
            running_fake_llm() as llm:
        llm.responder = respond
        env = pooled_env(bouncer, database, llm.url, TICK_ENABLED="true", TICK_INTERVAL_MS="60000",
                         MANA_AI_NOTIFY="true", MANA_AI_LOG_LEVEL="info", **extra)
        daemon = Daemon(tmp_path, [], env)
        process = await daemon.start()
        url = f"http://127.0.0.1:{env['PORT']}"
        try:
            notify = notify_state(await wait_healthy(url, daemon=daemon, timeout=30))
            if notify["enabled"]:  # else nothing would wake the daemon before the interval
                with trio.fail_after(10):  # the listener's first connect is a hint: its cycle finds nothing
                    while not notify_state(await wait_healthy(url))["connected"]:
                        await trio.sleep(0.05)
                mission = {"id": "m-new", "title": "New", "conceptMarkdown": "x", "objective": "Plan it",
                           "inputs": [], "iterations": [], "state": "active",
                           "nextRunAt": "2026-01-01T00:00:00.000Z", "cadence": {"kind": "interval", "everyMinutes": 60}}
                await trio.to_thread.run_sync(pg.sql, "INSERT INTO sync_changes (app_id, table_name, record_id,"
                                              " user_id, op, data, field_timestamps, client_id, created_at) VALUES "
                                              + _row("aiMissions", "m-new", "u-0", mission), database)
                with trio.move_on_after(5):
                    await asked.wait()
                notify = notify_state(await wait_healthy(url))
        finally:
            process.send_signal(signal.SIGTERM)
            code = await daemon.wait(timeout=30)
        assert code == 0, daemon.log()[-3000:]
    return asked.is_set(), notify, daemon.log()


def notify_state(health: dict[str, Any]) -> dict[str, Any]:
    checks = health["checks"]
    assert isinstance(checks, dict)
    notify: dict[str, Any] = checks["notify"]
    return notify


async def test_notify_over_its_own_url_past_the_pooler(tmp_path: Path, db_dsn: str, pg: PgServer) -> None:
    asked, notify, log = await _notify_scenario(tmp_path, pg, db_dsn, MANA_AI_LISTEN_DATABASE_URL=db_dsn)
    assert notify["enabled"] and notify["connected"] and notify["notifications"] >= 1, notify
    assert asked, f"the new mission was not planned within 5 s: no notification arrived\n{log[-2000:]}"


async def test_notify_off_behind_a_transaction_pooler_without_a_listen_url(tmp_path: Path, db_dsn: str,
                                                                          pg: PgServer) -> None:
    asked, notify, log = await _notify_scenario(tmp_path, pg, db_dsn)
    lines = [line for line in log.splitlines() if "notify.off" in line]
    assert len(lines) == 1 and "MANA_AI_LISTEN_DATABASE_URL" in lines[0], log[-2000:]
    assert notify == {"enabled": False}, notify  # the interval and the due timer find changes
