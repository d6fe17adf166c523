"""Shared benchmark plumbing: a throwaway Postgres, fresh databases, seeding, the stand-in LLM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import trio
from trio_asyncio import aio_as_trio

from store.embedded import throwaway_postgres
from store.migrate import migrate
from store.pool import close_pool, connect_with_retry

HERE = Path(__file__).parent


def _with_database(dsn: str, database: str) -> str:
    p = urlsplit(dsn)
    return urlunsplit((p.scheme, p.netloc, "/" + database, p.query, p.fragment))


@contextmanager
def postgres() -> Iterator[str]:
    """An admin DSN: MANA_AI_BENCH_DSN, or an embedded server in a temp dir (deleted after)."""
    if os.environ.get("MANA_AI_BENCH_DSN"):
        yield os.environ["MANA_AI_BENCH_DSN"]
        return
    with throwaway_postgres("mana-ai-bench-") as dsn:
        yield dsn


async def _admin(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def fresh_database(admin_dsn: str, name: str) -> str:
    """Drop and create `name`, migrate it, return its DSN."""
    await aio_as_trio(_admin)(admin_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await aio_as_trio(_admin)(admin_dsn, f"CREATE DATABASE {name}")
    dsn = _with_database(admin_dsn, name)
    pool = await connect_with_retry(dsn, 2, 10)
    try:
        await migrate(pool, create_sync_changes=True)
    finally:
        await close_pool(pool)
    return dsn


async def _seed(pool: asyncpg.Pool, rows: list[tuple[Any, ...]]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.executemany(
            "INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_timestamps,"
            " client_id, created_at) VALUES ('ai', $1, $2, $3, 'insert', $4::text::jsonb, '{}', 'bench',"
            " now() - interval '1 minute')", rows)


async def seed_missions(pool: asyncpg.Pool, missions: int, agents: int, *, users: int = 4,
                        agent_slots: int = 1) -> None:
    """`missions` due missions spread round-robin over `agents` agents (one user per agent group)."""
    rows: list[tuple[Any, ...]] = []
    for a in range(agents):
        user = f"user-{a % users}"
        rows.append(("agents", f"agent-{a}", user, json.dumps({
            "id": f"agent-{a}", "name": f"Agent {a}", "role": "Bench", "state": "active",
            "maxConcurrentMissions": agent_slots, "policy": {"tools": {}, "defaultForAi": "propose"}})))
    for m in range(missions):
        a = m % agents
        rows.append(("aiMissions", f"mission-{m}", f"user-{a % users}", json.dumps({
            "id": f"mission-{m}", "title": f"Mission {m}", "conceptMarkdown": "Bench", "objective": "Plan it",
            "inputs": [], "iterations": [], "state": "active", "nextRunAt": "2026-01-01T00:00:00.000Z",
            "agentId": f"agent-{a}", "cadence": {"kind": "interval", "everyMinutes": 60}})))
    await aio_as_trio(_seed)(pool, rows)


@dataclass(frozen=True)
class StandIn:
    url: str
    pid: int


@asynccontextmanager
async def open_stand_in_llm(latency_ms: float, *, backlog: int = 4096) -> AsyncIterator[StandIn]:
    """The stand-in LLM in its own process (it uses the other core, like a remote service)."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(HERE / "stand_in_llm.py"), "--port", "0", "--latency-ms", str(latency_ms),
         "--backlog", str(backlog)],
        stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            line += await proc.stdout.receive_some(100)
        port = int(line.split()[1])
        yield StandIn(f"http://127.0.0.1:{port}", proc.pid)
    finally:
        proc.terminate()
        await proc.wait()


@asynccontextmanager
async def stand_in_llm(latency_ms: float) -> AsyncIterator[str]:
    """The stand-in LLM's URL (see `open_stand_in_llm`)."""
    async with open_stand_in_llm(latency_ms) as llm:
        yield llm.url


async def llm_stats(url: str, *, reset: bool = False) -> dict[str, Any]:
    """The stand-in's `/stats` (`requests`, `max_in_flight`, `first_request_at`), or reset them."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{url}/reset") if reset else await client.get(f"{url}/stats")
        body: dict[str, Any] = response.json()
        return body
