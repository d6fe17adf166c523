"""Read-only queries behind the inspection endpoints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from trio_asyncio import aio_as_trio

from store.agents import load_agents
from store.records import Agent
from store.sql import Q


@dataclass(frozen=True)
class RunRow:
    due_slot: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_error: str | None
    iteration_id: str | None


@dataclass(frozen=True)
class MissionRow:
    mission_id: str
    record: dict[str, Any]
    tombstone: bool
    run: RunRow | None


@dataclass(frozen=True)
class UserMissions:
    missions: list[MissionRow]
    agents: dict[tuple[str, str], Agent]
    db_now: datetime | None


async def _missions(pool: asyncpg.Pool, user_id: str) -> tuple[list[MissionRow], datetime | None]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(Q["missions_of_user"], user_id)
    missions = []
    for r in rows:
        run = None if r["status"] is None else RunRow(
            r["due_slot"], r["status"], r["attempts"], r["next_attempt_at"], r["lease_owner"],
            r["lease_expires_at"], r["last_error"], r["iteration_id"])
        missions.append(MissionRow(r["mission_id"], r["record"], r["tombstone"], run))
    return missions, (rows[0]["db_now"] if rows else None)


async def user_missions(pool: asyncpg.Pool, user_id: str) -> UserMissions:
    missions, db_now = await aio_as_trio(_missions)(pool, user_id)
    agents = await load_agents(pool, [user_id]) if missions else {}
    return UserMissions(missions, agents, db_now)


async def _fetch(pool: asyncpg.Pool, query: str, args: tuple[Any, ...]) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch(query, *args))


async def agent_snapshot(pool: asyncpg.Pool, user_id: str, agent_id: str) -> tuple[dict[str, Any], bool] | None:
    rows = await aio_as_trio(_fetch)(pool, Q["agent_snapshot"], (user_id, agent_id))
    return (rows[0]["record"], rows[0]["tombstone"]) if rows else None


async def dead_slots(pool: asyncpg.Pool, user_id: str, agent_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await aio_as_trio(_fetch)(pool, Q["dead_slots_of_agent"], (user_id, agent_id))
    return rows


@dataclass(frozen=True)
class LedgerGauges:
    running: int
    backing_off: int
    dead: int


async def ledger_gauges(pool: asyncpg.Pool) -> LedgerGauges:
    rows = await aio_as_trio(_fetch)(pool, Q["ledger_gauges"], ())
    return LedgerGauges(rows[0]["running"], rows[0]["backing_off"], rows[0]["dead"])


@dataclass(frozen=True)
class RejectedRow:
    """A `sync_changes` row the refresh skipped (`mana_ai.rejected_rows`)."""

    change_id: str
    table_name: str
    user_id: str
    record_id: str
    reason: str
    detail: str
    row_bytes: int
    changed_at: datetime
    rejected_at: datetime


async def rejected_rows(pool: asyncpg.Pool, user_id: str | None, limit: int) -> list[RejectedRow]:
    """Rows the refresh skipped, the newest changes first: one user's, or everyone's when `user_id` is None."""
    query, args = ((Q["rejected_rows_all"], (limit,)) if user_id is None
                   else (Q["rejected_rows_of_user"], (user_id, limit)))
    rows = await aio_as_trio(_fetch)(pool, query, args)
    return [RejectedRow(str(r["change_id"]), r["table_name"], r["user_id"], r["record_id"], r["reason"], r["detail"],
                        r["row_bytes"], r["changed_at"], r["rejected_at"]) for r in rows]
