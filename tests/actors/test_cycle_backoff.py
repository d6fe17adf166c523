"""A cycle that fails backs off (capped, with jitter) instead of spinning, and says so."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import asyncpg
import pytest
import trio

from conftest import PgServer
from daemon import SERVICE_KEY, running_daemon
from fake_llm import plan_reply, running_fake_llm
from planning import CREATE_TASK, written_rows
from seed import insert_rows, mission

pytestmark = pytest.mark.slow
KEY = {"X-Service-Key": SERVICE_KEY}


def _refuse_connections(pg: PgServer, database: str, refuse: bool) -> None:
    pg.sql(f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS {'false' if refuse else 'true'}")
    if refuse:  # and cut the daemon's pooled connections, as a failover does
        pg.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")


def _cycles(d: object) -> float:
    return sum(d.metric("mana_ai_cycles_total", reason=r)  # type: ignore[attr-defined]
               for r in ("interval", "due-timer", "notify", "manual"))


async def test_cycles_back_off_while_the_database_refuses_connections(
        pool: asyncpg.Pool, db_dsn: str, pg: PgServer) -> None:
    database = urlsplit(db_dsn).path[1:]
    soon = (datetime.now(timezone.utc) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    await insert_rows(pool, {**mission("m1", next_run_at=soon),
                             "created_at": datetime.now(timezone.utc) - timedelta(minutes=1)})
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm, \
            running_daemon(pool, mana_llm_url=llm.url, tick_enabled=True, tick_interval_ms=60_000) as d:
        with trio.fail_after(10):  # the first cycle ran and armed the due-timer for m1 (1 s ahead)
            while (await d.client.get("/health")).json()["checks"]["cyclesCompleted"] < 1:
                await trio.sleep(0.05)
        _refuse_connections(pg, database, True)
        try:
            before = _cycles(d)
            await trio.sleep(3.0)  # the due-timer fires into an outage: it must not spin
            during = _cycles(d) - before
            assert 1 <= during <= 6, f"{during} cycles in 3 s during the outage"
            health = await d.client.get("/health")
            checks = health.json()["checks"]
            assert health.status_code == 503
            assert checks["consecutiveCycleFailures"] >= 1 and checks["lastCycleError"]
            assert d.metric("mana_ai_cycle_consecutive_failures") >= 1
        finally:
            _refuse_connections(pg, database, False)
        # back: the next retry (within the capped back-off) plans m1, and the count resets
        with trio.fail_after(20):
            while not await written_rows(pool, "m1"):
                await trio.sleep(0.2)
        with trio.fail_after(5):
            while (await d.client.get("/health")).json()["checks"]["consecutiveCycleFailures"] != 0:
                await trio.sleep(0.1)
        assert d.metric("mana_ai_cycle_consecutive_failures") == 0
        assert len(await written_rows(pool, "m1")) == 1


async def test_a_manual_tick_does_not_wait_for_the_back_off(pool: asyncpg.Pool, db_dsn: str, pg: PgServer) -> None:
    database = urlsplit(db_dsn).path[1:]
    async with running_daemon(pool, tick_enabled=True, tick_interval_ms=60_000) as d:
        _refuse_connections(pg, database, True)
        try:
            for _ in range(3):
                with trio.fail_after(8):
                    stats = (await d.client.post("/internal/tick", headers=KEY)).json()
                assert stats["errors"] and "ExceptionGroup" not in stats["errors"][0]
        finally:
            _refuse_connections(pg, database, False)
        body = (await d.client.get("/health")).json()
        assert body["checks"]["consecutiveCycleFailures"] >= 3
