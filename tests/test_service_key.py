"""The service key as an operator meets it, with the daemon as a process: without a key of its
own the daemon serves this machine only, refuses to serve others, and refuses a short key."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from test_daemon_process import Daemon, daemon_env, free_port, wait_healthy

pytestmark = pytest.mark.slow

LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on `port` (/proc/net/tcp and tcp6, hex)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, _, port_hex = local.rpartition(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def other_addresses() -> list[str]:
    """This machine's IPv4 addresses that are not loopback (the ones other machines reach)."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [a for a in out.split() if ipaddress.ip_address(a).version == 4 and not ipaddress.ip_address(a).is_loopback]


def reachable(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(5)
        try:
            s.connect((address, port))
        except OSError:
            return False
        return True


@asynccontextmanager
async def started(tmp_path: Path, **env: str) -> AsyncIterator[Daemon]:
    """A daemon process, killed on the way out if a test left it running."""
    daemon = Daemon(tmp_path, [], daemon_env(**env))
    process = await daemon.start()
    try:
        yield daemon
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_without_a_service_key_the_daemon_serves_loopback_only(tmp_path: Path, db_dsn: str) -> None:
    port = free_port()
    async with started(tmp_path, PORT=str(port), SYNC_DATABASE_URL=db_dsn) as daemon:
        await wait_healthy(f"http://127.0.0.1:{port}", daemon=daemon)
        assert listening_addresses(port) == {LOOPBACK_HEX}, daemon.log()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:  # the README's quick start
            agents = await client.get("/internal/agents", headers={"X-Service-Key": "dev-service-key"})
            assert agents.status_code == 200
        for address in other_addresses():
            assert not reachable(address, port), f"{address}:{port} answered"
        assert daemon.process is not None
        daemon.process.terminate()
        assert await daemon.wait() == 0
    warnings = [line for line in daemon.log().splitlines() if "MANA_SERVICE_KEY" in line]
    assert len(warnings) == 1 and "config.default_service_key" in warnings[0], daemon.log()
    assert "127.0.0.1" in warnings[0]


@pytest.mark.parametrize("key", [None, "dev-service-key"])
async def test_without_a_service_key_the_daemon_refuses_to_serve_other_machines(
        tmp_path: Path, db_dsn: str, key: str | None) -> None:
    env = {"PORT": str(free_port()), "SYNC_DATABASE_URL": db_dsn, "MANA_AI_HOST": "0.0.0.0",
           "MANA_AI_STATE_DIR": str(tmp_path / "state")}
    if key is not None:
        env["MANA_SERVICE_KEY"] = key
    async with started(tmp_path, **env) as daemon:
        assert await daemon.wait() == 2, daemon.log()
    [line] = daemon.log().strip().splitlines()
    assert line.startswith("mana-ai: configuration error: MANA_SERVICE_KEY ") and "MANA_AI_HOST=0.0.0.0" in line


async def test_a_short_service_key_stops_startup_with_one_line(tmp_path: Path) -> None:
    async with started(tmp_path, PORT=str(free_port()), MANA_SERVICE_KEY="hunter2-secret",
                       MANA_AI_STATE_DIR=str(tmp_path / "state")) as daemon:
        assert await daemon.wait() == 2, daemon.log()
    assert daemon.log().strip().splitlines() == [
        "mana-ai: configuration error: MANA_SERVICE_KEY is too short: use at least 16 characters"
        " (for example `openssl rand -hex 32`)"]
    assert not (tmp_path / "state").exists()  # nothing was started
