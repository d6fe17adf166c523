"""The embedded PostgreSQL after the daemon died without stopping it (`kill -9`, OOM killer)."""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from test_daemon_process import Daemon, daemon_env, free_port, postgres_running_on, wait_healthy

pytestmark = pytest.mark.slow


def postgres_under(directory: Path) -> list[psutil.Process]:
    """Every PostgreSQL process working under `directory`: the postmaster names its data
    directory on its command line, every backend runs inside it."""
    root = str(directory.resolve())
    found = []
    for proc in psutil.process_iter(attrs=["name", "cmdline", "cwd"]):
        in_cmdline = root in " ".join(proc.info["cmdline"] or [])
        cwd = proc.info["cwd"] or ""
        if proc.info["name"] == "postgres" and (in_cmdline or cwd == root or cwd.startswith(f"{root}/")):
            found.append(proc)
    return found


@contextmanager
def own_state_dir() -> Iterator[Path]:
    """A state directory outside pytest's tmp dirs: a concurrent pytest run makes those 0700
    again, and the server (as root: the user `embedded_postgres`) could no longer reach its data.
    Whatever fails, no server is left behind."""
    base = Path(tempfile.mkdtemp(prefix="mana-ai-state-"))
    base.chmod(0o755)
    try:
        yield base / "state"
    finally:
        for proc in postgres_under(base):
            proc.kill()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def state() -> Iterator[Path]:
    with own_state_dir() as path:
        yield path


async def test_a_killed_daemon_leaves_postgres_that_the_next_start_takes_over_and_stops(
        tmp_path: Path, state: Path) -> None:
    port = free_port()
    env = daemon_env(PORT=str(port), MANA_AI_STATE_DIR=str(state), MANA_AI_HOST="127.0.0.1")
    crashed = Daemon(tmp_path, [], env)
    process = await crashed.start()
    await wait_healthy(f"http://127.0.0.1:{port}", daemon=crashed)
    process.send_signal(signal.SIGKILL)
    assert await crashed.wait() == -signal.SIGKILL
    assert postgres_running_on((state / "pgdata").resolve()), "the crash should leave the server running"

    restarted = Daemon(tmp_path, [], env)
    await restarted.start()
    await wait_healthy(f"http://127.0.0.1:{port}", daemon=restarted)
    assert restarted.process is not None
    restarted.process.send_signal(signal.SIGTERM)
    assert await restarted.wait() == 0, restarted.log()
    assert postgres_under(state) == [], restarted.log()
    assert "embedded_pg.orphan_stopped" in restarted.log()


async def test_a_tick_beside_the_daemon_shares_its_postgres_and_leaves_it_running(
        tmp_path: Path, state: Path) -> None:
    port = free_port()
    env = daemon_env(PORT=str(port), MANA_AI_STATE_DIR=str(state), MANA_AI_HOST="127.0.0.1", TICK_ENABLED="false")
    daemon = Daemon(tmp_path, [], env)
    await daemon.start()
    await wait_healthy(f"http://127.0.0.1:{port}", daemon=daemon)
    tick = Daemon(tmp_path, ["tick"], env)
    await tick.start()
    assert await tick.wait() == 0, tick.log()
    assert "embedded_pg.left_running" in tick.log() and "orphan" not in tick.log()
    body = await wait_healthy(f"http://127.0.0.1:{port}", timeout=5)  # its database still answers
    assert body["ok"] is True
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGTERM)
    assert await daemon.wait() == 0, daemon.log()
    assert "embedded_pg.stopped" in daemon.log()
    assert postgres_under(state) == [], daemon.log()
