"""Queries behind the inspection endpoints and the operator console: reads, and the two
operator actions on a dead slot (retry, discard)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg
from trio_asyncio import aio_as_trio

from store.agents import load_agents
from store.records import Agent
from store.refresh import Rejection
from store.sql import Q
from store.usage import STALE_RESERVATION_S


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
class RejectedRow(Rejection):
    """A `Rejection` read back from `mana_ai.rejected_rows` for `GET /internal/rejected`: the
    fields the refresh reported, plus when it recorded them."""

    rejected_at: datetime


async def rejected_rows(pool: asyncpg.Pool, user_id: str | None, limit: int) -> list[RejectedRow]:
    """Rows the refresh skipped, the newest changes first: one user's, or everyone's when `user_id` is None."""
    query, args = ((Q["rejected_rows_all"], (limit,)) if user_id is None
                   else (Q["rejected_rows_of_user"], (user_id, limit)))
    rows = await aio_as_trio(_fetch)(pool, query, args)
    return [RejectedRow(r["change_id"], r["table_name"], r["user_id"], r["record_id"], r["reason"], r["detail"],
                        r["row_bytes"], r["changed_at"], r["rejected_at"]) for r in rows]


# -- the operator console ---------------------------------------------------------------------

@dataclass(frozen=True)
class AgentSnapshotRow:
    user_id: str
    agent_id: str
    record: dict[str, Any]
    tombstone: bool


async def all_agents(pool: asyncpg.Pool, limit: int) -> list[AgentSnapshotRow]:
    """Every agent snapshot (tombstones included), in (user, agent) order, at most `limit`."""
    rows = await aio_as_trio(_fetch)(pool, Q["console_agents"], (limit,))
    return [AgentSnapshotRow(r["user_id"], r["agent_id"], r["record"], r["tombstone"]) for r in rows]


async def usage_24h_of(pool: asyncpg.Pool, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """`usage_24h(...).used` of each of these agents in one statement; agents without use are absent."""
    if not keys:
        return {}
    args = ([k[0] for k in keys], [k[1] for k in keys], STALE_RESERVATION_S)
    rows = await aio_as_trio(_fetch)(pool, Q["console_usage_24h"], args)
    return {(r["user_id"], r["agent_id"]): int(r["used"]) for r in rows}


@dataclass(frozen=True)
class SpendRow:
    user_id: str
    agent_id: str  # the legacy principal for legacy missions
    used: int       # the agent's 24 h use
    user_used: int  # the user's
    total: int      # the deployment's


async def spend_24h(pool: asyncpg.Pool, users: int) -> list[SpendRow]:
    """The 24 h use per agent of the `users` users who used most (most first), with their totals."""
    rows = await aio_as_trio(_fetch)(pool, Q["console_spend_24h"], (users, STALE_RESERVATION_S))
    return [SpendRow(r["user_id"], r["agent_id"], int(r["used"]), int(r["user_used"]), int(r["total"])) for r in rows]


@dataclass(frozen=True)
class LedgerCounts:
    running: int
    backing_off: int
    retry_due: int
    dead: int  # not discarded
    discarded: int
    planned_24h: int


async def ledger_counts(pool: asyncpg.Pool) -> LedgerCounts:
    rows = await aio_as_trio(_fetch)(pool, Q["console_ledger_counts"], ())
    r = rows[0]
    return LedgerCounts(r["running"], r["backing_off"], r["retry_due"], r["dead"], r["discarded"], r["planned_24h"])


async def planned_per_minute(pool: asyncpg.Pool, minutes: int) -> list[int]:
    """Slots planned in each of the last `minutes` minutes, the oldest minute first."""
    rows = await aio_as_trio(_fetch)(pool, Q["console_planned_per_minute"], (minutes,))
    counts = [0] * minutes
    for r in rows:
        ago = r["minutes_ago"]
        if 0 <= ago < minutes:
            counts[minutes - 1 - ago] += r["planned"]
    return counts


@dataclass(frozen=True)
class DeadSlot:
    user_id: str
    mission_id: str
    due_slot: str
    attempts: int
    last_error: str | None
    finished_at: datetime | None
    title: str | None  # None: the mission snapshot is gone
    agent_id: str | None
    agent_name: str | None
    current: bool  # still the mission's due slot: a retry makes it due again


async def open_dead_slots(pool: asyncpg.Pool, limit: int) -> tuple[list[DeadSlot], int]:
    """Dead slots not discarded, newest first, at most `limit`; and how many there are in all."""
    rows = await aio_as_trio(_fetch)(pool, Q["console_dead_slots"], (limit,))
    slots = [DeadSlot(r["user_id"], r["mission_id"], r["due_slot"], r["attempts"], r["last_error"], r["finished_at"],
                      r["title"], r["agent_id"], r["agent_name"], r["current"]) for r in rows]
    return slots, (rows[0]["total"] if rows else 0)


SlotOutcome = Literal["retried", "discarded", "no-dead-slot", "not-dead", "already-discarded", "superseded"]


@dataclass(frozen=True)
class SlotAction:
    """What a retry or discard of a dead slot did; `due_slot` is the slot acted on (None: none found)."""

    outcome: SlotOutcome
    due_slot: str | None


async def _act_on_slot(pool: asyncpg.Pool, action: Literal["retry", "discard"], user_id: str, mission_id: str,
                       due_slot: str | None) -> SlotAction:
    async with pool.acquire() as conn, conn.transaction():
        if due_slot is None:
            due_slot = await conn.fetchval(Q["console_find_dead_slot"], user_id, mission_id)
            if due_slot is None:
                return SlotAction("no-dead-slot", None)
        query = Q["console_retry_slot"] if action == "retry" else Q["console_discard_slot"]
        if await conn.fetchrow(query, user_id, mission_id, due_slot) is not None:
            return SlotAction("retried" if action == "retry" else "discarded", due_slot)
        state = await conn.fetchrow(Q["console_slot_state"], user_id, mission_id, due_slot)
    if state is None:
        return SlotAction("no-dead-slot", due_slot)
    if state["status"] != "dead":
        return SlotAction("not-dead", due_slot)
    if action == "discard":
        return SlotAction("already-discarded", due_slot)
    return SlotAction("superseded", due_slot)  # dead, but the mission moved on (or was deleted)


async def retry_dead_slot(pool: asyncpg.Pool, user_id: str, mission_id: str, due_slot: str | None) -> SlotAction:
    """Give a dead slot another chance: the next cycle runs it (attempts start again at 0).

    Without `due_slot`, the mission's dead slot at its current `nextRunAt`. Only that slot can
    run again; an older one is `superseded`."""
    result: SlotAction = await aio_as_trio(_act_on_slot)(pool, "retry", user_id, mission_id, due_slot)
    return result


async def discard_dead_slot(pool: asyncpg.Pool, user_id: str, mission_id: str, due_slot: str | None) -> SlotAction:
    """Take a dead slot off the console's list; it stays dead (never due again)."""
    result: SlotAction = await aio_as_trio(_act_on_slot)(pool, "discard", user_id, mission_id, due_slot)
    return result
