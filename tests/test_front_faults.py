"""The HTTP front cannot take the daemon down (a real process, real Postgres, raw sockets).

Before the fix, 2–7 malformed chunked POSTs (hypercorn#203) ended the daemon with exit code 1,
and a flood of /health made the pool's acquire time out (503 from a healthy daemon).
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from front_probes import PROBES, send_bad_chunked, status_of
from test_daemon_process import Daemon, daemon_env, free_port, wait_healthy

pytestmark = pytest.mark.slow

KEY = "front-faults-key"
PATHS = ("/health", "/internal/tick", "/nowhere")
FLOOD = 500  # concurrent connections, half /health, half /metrics


@asynccontextmanager
async def running_daemon_process(tmp_path: Path, db_dsn: str) -> AsyncIterator[tuple[Daemon, str]]:
    """The daemon on `db_dsn`, healthy; leaving the block sends SIGTERM and wants exit code 0."""
    port = free_port()
    daemon = Daemon(tmp_path, [], daemon_env(PORT=str(port), SYNC_DATABASE_URL=db_dsn, MANA_AI_HOST="127.0.0.1",
                                             MANA_SERVICE_KEY=KEY, MANA_AI_DB_POOL_SIZE="4"))
    process = await daemon.start()
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, daemon=daemon)
        yield daemon, url
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await daemon.wait(timeout=15)
    assert code == 0, daemon.log()
    log = daemon.log()
    assert "Traceback" not in log and "http.connection_failed" not in log and "http.front_restarted" not in log, log


async def test_malformed_chunked_requests_do_not_take_the_daemon_down(tmp_path: Path, db_dsn: str) -> None:
    async with running_daemon_process(tmp_path, db_dsn) as (daemon, url):
        assert daemon.process is not None
        with trio.fail_after(30):
            for sent in range(PROBES):
                await send_bad_chunked(url, PATHS[sent % len(PATHS)])
                assert daemon.process.returncode is None, f"the daemon died after {sent + 1} probes:\n{daemon.log()}"
            assert await status_of(url, "/health") == 200, daemon.log()
            async with httpx.AsyncClient(base_url=url, timeout=20) as client:
                tick = await client.post("/internal/tick", headers={"X-Service-Key": KEY})
        assert tick.status_code == 200 and tick.json()["dueMissionCount"] == 0


async def test_a_flood_of_health_and_metrics_is_answered(tmp_path: Path, db_dsn: str) -> None:
    async with running_daemon_process(tmp_path, db_dsn) as (daemon, url):
        assert daemon.process is not None
        with trio.fail_after(60):
            for sent in range(10):
                await send_bad_chunked(url, PATHS[sent % len(PATHS)])
            statuses: dict[str, list[int | None]] = {"/health": [], "/metrics": []}

            async def one(path: str) -> None:
                statuses[path].append(await status_of(url, path, timeout_s=20))

            started = trio.current_time()
            async with trio.open_nursery() as flood:
                for n in range(FLOOD):
                    flood.start_soon(one, ("/health", "/metrics")[n % 2])
            took = trio.current_time() - started
            assert daemon.process.returncode is None, daemon.log()
            counts = {path: Counter(answers) for path, answers in statuses.items()}
            assert counts == {"/health": {200: FLOOD // 2}, "/metrics": {200: FLOOD // 2}}, counts
            assert await status_of(url, "/health") == 200
        print(f"flood: {FLOOD} connections answered in {took:.2f}s")  # shown with -s; the figure for the docs
