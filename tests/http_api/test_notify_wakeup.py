"""NOTIFY wake-ups in the running daemon: new missions planned at once, nothing missed on reconnect."""

from __future__ import annotations


import asyncpg
import trio

from daemon import running_daemon
from fake_llm import plan_reply, running_fake_llm
from planning import CREATE_TASK, written_rows
from seed import fetch, insert_rows, mission

NOTIFY_ON = {"tick_enabled": True, "tick_interval_ms": 60_000, "notify_setting": True}


async def wait_written(pool: asyncpg.Pool, mission_id: str, timeout: float = 5) -> float:
    started = trio.current_time()
    with trio.fail_after(timeout):
        while not await written_rows(pool, mission_id):
            await trio.sleep(0.02)
    return trio.current_time() - started


async def wait_cycles(d: object, count: int) -> None:
    with trio.fail_after(5):
        while (await d.client.get("/health")).json()["checks"]["cyclesCompleted"] < count:  # type: ignore[attr-defined]
            await trio.sleep(0.02)


async def test_a_new_mission_is_planned_without_waiting_for_the_interval(pool: asyncpg.Pool, db_dsn: str) -> None:
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm, \
            running_daemon(pool, listen_dsn=db_dsn, mana_llm_url=llm.url, **NOTIFY_ON) as d:
        await wait_cycles(d, 1)  # the first cycle, at start
        health = (await d.client.get("/health")).json()
        assert health["checks"]["notify"]["enabled"] is True
        await insert_rows(pool, mission("m1", next_run_at="2026-01-01T00:00:00.000Z"))
        assert await wait_written(pool, "m1") < 2
        assert d.metric("mana_ai_cycles_total", reason="notify") >= 1


async def test_a_killed_listen_connection_reconnects_and_nothing_is_missed(pool: asyncpg.Pool, db_dsn: str) -> None:
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm, \
            running_daemon(pool, listen_dsn=db_dsn, mana_llm_url=llm.url, **NOTIFY_ON) as d:
        await wait_cycles(d, 1)
        with trio.fail_after(5):
            while not (await d.client.get("/health")).json()["checks"]["notify"].get("connected"):
                await trio.sleep(0.02)
        await fetch(pool, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = 'mana-ai-listen'")
        # written while the listener is (probably) down: its NOTIFY is lost, the re-scan finds it
        await insert_rows(pool, mission("m2", next_run_at="2026-01-01T00:00:00.000Z"))
        assert await wait_written(pool, "m2") < 5
        with trio.fail_after(5):
            while (await d.client.get("/health")).json()["checks"]["notify"]["connects"] < 2:
                await trio.sleep(0.02)
        await insert_rows(pool, mission("m3", next_run_at="2026-01-01T00:00:00.000Z"))
        assert await wait_written(pool, "m3") < 2

