"""The daemon as an operator runs it: `python -m supervisor serve`, configured by its environment.

    async with running_daemon(dsn, llm_url, workdir, "bench-1", llm_concurrency=8, mailbox_size=200) as daemon:
        daemon.url, daemon.pid       # healthy: /health answered 200

Its output goes to `workdir/<instance>.log` (tail printed when something fails); `/internal/*`
takes `X-Service-Key: SERVICE_KEY`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parents[1]
SERVICE_KEY = "bench-service-key"


@dataclass(frozen=True)
class Daemon:
    url: str
    pid: int
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon_env(dsn: str, llm_url: str, port: int, instance: str, *, llm_concurrency: int,
               mailbox_size: int, db_pooler: str = "none", extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment (an unknown MANA_AI_* variable would stop start-up) plus the settings;
    `extra` adds or overrides settings."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    env.update({
        "PYTHONPATH": str(ROOT),  # this checkout, ahead of any installed copy
        "SYNC_DATABASE_URL": dsn, "PORT": str(port), "MANA_AI_HOST": "127.0.0.1", "MANA_LLM_URL": llm_url,
        "MANA_SERVICE_KEY": SERVICE_KEY, "TICK_ENABLED": "false", "MANA_AI_SNAPSHOT_LAG_MS": "0",
        "MANA_AI_LLM_CONCURRENCY": str(llm_concurrency), "MANA_AI_MAILBOX_SIZE": str(mailbox_size),
        "MANA_AI_LOG_LEVEL": "warning", "MANA_AI_INSTANCE_ID": instance,
        "MANA_AI_DB_POOLER": db_pooler,  # "transaction": no named prepared statements (store/pool.py)
    })
    env.update(extra or {})
    return env


async def _wait_healthy(client: httpx.AsyncClient, process: trio.Process, daemon: Daemon) -> None:
    with trio.fail_after(60):
        while True:
            if process.returncode is not None:
                raise SystemExit(f"the daemon exited with {process.returncode}:\n{daemon.log_tail()}")
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.05)


@asynccontextmanager
async def running_daemon(dsn: str, llm_url: str, workdir: Path, instance: str, *, llm_concurrency: int,
                         mailbox_size: int, profile_dir: Path | None = None,
                         db_pooler: str = "none", extra_env: Mapping[str, str] | None = None) -> AsyncIterator[Daemon]:
    """`python -m supervisor serve` until healthy; SIGTERM (then SIGKILL after 30 s) at the end."""
    port = _free_port()
    log_path = workdir / f"{instance}.log"
    profiler = [] if profile_dir is None else ["-m", "cProfile", "-o", str(profile_dir / f"{instance}.prof")]
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(
            [sys.executable, *profiler, "-m", "supervisor", "serve"],
            env=daemon_env(dsn, llm_url, port, instance, llm_concurrency=llm_concurrency, mailbox_size=mailbox_size,
                           db_pooler=db_pooler, extra=extra_env),
            cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT)
        daemon = Daemon(f"http://127.0.0.1:{port}", process.pid, log_path)
        try:
            async with httpx.AsyncClient(base_url=daemon.url, timeout=5) as client:
                await _wait_healthy(client, process, daemon)
            yield daemon
        except Exception:
            exited = "" if process.returncode is None else f" (it exited with {process.returncode})"
            print(f"{instance}: the daemon's log{exited}:\n{daemon.log_tail()}", file=sys.stderr)
            raise
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                with trio.move_on_after(30) as waited:
                    await process.wait()
                if waited.cancelled_caught:
                    process.kill()
                    await process.wait()
