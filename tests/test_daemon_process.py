"""The daemon as an operator runs it: a real process, real signals, real sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil  # type: ignore[import-untyped]
import pytest
import trio

from conftest import PgServer
from fake_llm import Reply, running_fake_llm

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon_env(**values: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    env.update(values)
    return env


class Daemon:
    def __init__(self, tmp: Path, args: list[str], env: dict[str, str]) -> None:
        self.log_path = tmp / f"daemon-{time.monotonic_ns()}.log"
        self.args = [sys.executable, "-m", "supervisor", *args]
        self.env = env
        self.process: trio.Process | None = None

    async def start(self) -> trio.Process:
        self._log = self.log_path.open("wb")
        self.process = await trio.lowlevel.open_process(self.args, env=self.env, stdout=self._log,
                                                       stderr=subprocess.STDOUT)
        return self.process

    async def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        with trio.fail_after(timeout):
            code = await self.process.wait()
        self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text()


async def wait_healthy(url: str, timeout: float = 60, daemon: Daemon | None = None) -> dict[str, object]:
    async with httpx.AsyncClient() as client:
        with trio.fail_after(timeout):
            while True:
                if daemon is not None and daemon.process is not None and daemon.process.returncode is not None:
                    raise AssertionError(f"the daemon exited with {daemon.process.returncode} before it was"
                                         f" healthy:\n{daemon.log()}")
                try:
                    response = await client.get(f"{url}/health")
                    if response.status_code == 200:
                        body: dict[str, object] = response.json()
                        return body
                except httpx.TransportError:
                    pass
                await trio.sleep(0.1)


def postgres_running_on(pgdata: Path) -> bool:
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(pgdata) in " ".join(proc.info["cmdline"] or []):
            return True
    return False


async def test_embedded_default_serves_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = daemon_env(PORT=str(port), MANA_AI_STATE_DIR=str(tmp_path / "state"), MANA_AI_HOST="127.0.0.1")
    first = Daemon(tmp_path, [], env)
    await first.start()
    body = await wait_healthy(f"http://127.0.0.1:{port}")
    assert body["ok"] is True
    assert first.process is not None
    first.process.send_signal(signal.SIGTERM)
    assert await first.wait() == 0, first.log()
    assert "fresh=True" in first.log()
    pgdata = (tmp_path / "state" / "pgdata").resolve()
    assert not postgres_running_on(pgdata), "embedded Postgres outlived the daemon"
    # the second start reuses the data directory
    second = Daemon(tmp_path, [], env)
    await second.start()
    await wait_healthy(f"http://127.0.0.1:{port}")
    assert second.process is not None
    second.process.send_signal(signal.SIGINT)
    assert await second.wait() == 0, second.log()
    assert "fresh=False" in second.log()
    assert not postgres_running_on(pgdata)


async def test_startup_failing_half_way_still_stops_embedded_postgres(tmp_path: Path) -> None:
    with socket.socket() as busy:  # the HTTP port is taken: start-up fails after Postgres started
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = daemon_env(PORT=str(port), MANA_AI_STATE_DIR=str(tmp_path / "state"), MANA_AI_HOST="127.0.0.1")
        daemon = Daemon(tmp_path, [], env)
        await daemon.start()
        assert await daemon.wait() == 1, daemon.log()
    assert "daemon.failed" in daemon.log()
    assert not postgres_running_on((tmp_path / "state" / "pgdata").resolve())


async def test_idle_keep_alive_client_does_not_hold_shutdown(tmp_path: Path, db_dsn: str, pg: PgServer) -> None:
    port = free_port()
    daemon = Daemon(tmp_path, [], daemon_env(PORT=str(port), SYNC_DATABASE_URL=db_dsn, MANA_AI_HOST="127.0.0.1"))
    await daemon.start()
    await wait_healthy(f"http://127.0.0.1:{port}")
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
    received = b""
    while b'"ok"' not in received:
        received += await stream.receive_some()
    assert daemon.process is not None
    started = trio.current_time()
    daemon.process.send_signal(signal.SIGTERM)
    code = await daemon.wait(timeout=10)
    elapsed = trio.current_time() - started
    await stream.aclose()
    assert code == 0, daemon.log()
    assert elapsed < 1.5, f"shutdown took {elapsed:.2f}s with an idle keep-alive client"
    left = pg.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'mana-ai%'", "postgres")
    assert left == "0", "the daemon left connections behind"


async def test_invalid_configuration_stops_startup_with_one_line(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, [], daemon_env(PORT="eighty", MANA_AI_STATE_DIR=str(tmp_path / "s")))
    await daemon.start()
    assert await daemon.wait() == 2
    lines = daemon.log().strip().splitlines()
    assert lines == ["mana-ai: configuration error: PORT='eighty' is invalid: expected an integer >= 1 "
                     "and <= 65535"]
    assert not (tmp_path / "s").exists()  # nothing was started


async def test_migrate_and_tick_commands(tmp_path: Path, db_dsn: str) -> None:
    env = daemon_env(SYNC_DATABASE_URL=db_dsn)
    migrate = Daemon(tmp_path, ["migrate"], env)
    await migrate.start()
    assert await migrate.wait() == 0
    assert '{"applied": [], "syncSchema": "v0.6"}' in migrate.log()  # the template is migrated already: idempotent
    tick = Daemon(tmp_path, ["tick"], env)
    await tick.start()
    assert await tick.wait() == 0
    assert '"dueMissionCount": 0' in tick.log()


async def test_demo_runs_the_whole_loop_on_a_throwaway_database(tmp_path: Path) -> None:
    demo = Daemon(tmp_path, ["demo"], daemon_env(MANA_AI_STATE_DIR=str(tmp_path / "untouched")))
    await demo.start()
    assert await demo.wait(timeout=60) == 0, demo.log()
    out = demo.log()
    assert '"dueMissionCount": 4' in out and '"plansWrittenBack": 3' in out
    assert "mission-vacation       agent-paused" in out
    assert 'create_task {"title": "Do the weekly review"' in out and "complete_task" not in out
    assert "note-1   ok" in out and "note-2   scope-violation  record-not-in-grant-allowlist" in out
    assert not (tmp_path / "untouched").exists()


@pytest.mark.parametrize("delay_s", [0.0, 0.4, 0.8])  # during initdb, during start, while migrating
async def test_sigterm_during_startup_still_stops_embedded_postgres(tmp_path: Path, delay_s: float) -> None:
    env = daemon_env(PORT=str(free_port()), MANA_AI_STATE_DIR=str(tmp_path / "state"), MANA_AI_HOST="127.0.0.1")
    daemon = Daemon(tmp_path, [], env)
    process = await daemon.start()
    with trio.fail_after(30):  # as soon as Postgres is being set up, before the daemon serves
        while not (tmp_path / "state" / "pgdata").exists():
            await trio.sleep(0.01)
    await trio.sleep(delay_s)
    process.send_signal(signal.SIGTERM)
    assert await daemon.wait() == 0, daemon.log()
    assert not postgres_running_on((tmp_path / "state" / "pgdata").resolve())
    # and the next start works (a first initdb cut short must not leave a broken data directory)
    again = Daemon(tmp_path, [], env)
    await again.start()
    await wait_healthy(f"http://127.0.0.1:{env['PORT']}", daemon=again)
    assert again.process is not None
    again.process.send_signal(signal.SIGTERM)
    assert await again.wait() == 0, again.log()


async def test_sigterm_with_a_mission_in_flight_hands_its_slot_back(tmp_path: Path, db_dsn: str, pg: PgServer) -> None:
    database = urlsplit(db_dsn).path[1:]
    past = (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat()
    pg.sql("INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id, created_at) "
           "VALUES ('ai', 'aiMissions', 'm1', 'u-1', 'insert', '{\"id\": \"m1\", \"title\": \"T\", \"state\": "
           f"\"active\", \"nextRunAt\": \"2026-01-01T00:00:00.000Z\"}}', 'device', '{past}')", database)
    async with running_fake_llm(Reply(hang=True)) as llm:
        env = daemon_env(PORT=str(free_port()), SYNC_DATABASE_URL=db_dsn, MANA_AI_HOST="127.0.0.1",
                         MANA_LLM_URL=llm.url, MANA_AI_GRACE_S="0.5")
        daemon = Daemon(tmp_path, [], env)
        process = await daemon.start()
        with trio.fail_after(30):
            while llm.in_flight == 0:  # the first cycle, at start, is planning m1
                await trio.sleep(0.05)
        started = trio.current_time()
        process.send_signal(signal.SIGTERM)
        assert await daemon.wait(timeout=15) == 0, daemon.log()
        assert trio.current_time() - started < 3
    ledger = pg.sql("SELECT status || ',' || attempts || ',' || coalesce(lease_token::text, '-') "
                    "FROM mana_ai.mission_runs WHERE mission_id = 'm1'", database)
    assert ledger == "retry,0,-"  # handed back: another instance may take it at once, no attempt used
    assert pg.sql("SELECT count(*) FROM sync_changes WHERE client_id = 'mana-ai-runner'", database) == "0"
