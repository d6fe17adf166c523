"""The token ledger `mana_ai.token_usage`: reserve before an LLM call, settle or release after."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from trio_asyncio import aio_as_trio

from store.sql import Q

# A reservation older than this no longer counts: its run died without settling.
STALE_RESERVATION_S = 3600.0


@dataclass(frozen=True)
class Reservation:
    id: int | None  # None: refused, the agent is at or over its budget
    used_24h: int   # the agent's use when asked (settled tokens plus live reservations)

    @property
    def granted(self) -> bool:
        return self.id is not None


@dataclass(frozen=True)
class TokenUsage:
    """What one LLM call used, to be recorded (settling its reservation, if it had one)."""

    reservation_id: int | None
    user_id: str
    agent_id: str
    mission_id: str
    iteration_id: str | None
    prompt_tokens: int
    completion_tokens: int


async def record_usage_on(conn: asyncpg.Connection, usage: TokenUsage) -> None:
    """Record `usage` on an open connection (inside the caller's transaction)."""
    if usage.reservation_id is not None:
        await conn.execute(Q["settle_tokens"], usage.reservation_id, usage.prompt_tokens, usage.completion_tokens,
                           usage.iteration_id)
    else:
        await conn.execute(Q["insert_used_tokens"], usage.user_id, usage.agent_id, usage.mission_id,
                           usage.iteration_id, usage.prompt_tokens, usage.completion_tokens)


async def _record(pool: asyncpg.Pool, usage: TokenUsage) -> None:
    async with pool.acquire() as conn:
        await record_usage_on(conn, usage)


async def record_usage(pool: asyncpg.Pool, usage: TokenUsage) -> None:
    """Record `usage` on its own (runs whose plan is not written back)."""
    await aio_as_trio(_record)(pool, usage)


@dataclass(frozen=True)
class Usage24h:
    used: int          # settled + live reservations (what the budget is checked against)
    settled: int       # tokens the LLM reported
    reservations: int  # runs holding a reservation now


async def _reserve(pool: asyncpg.Pool, user_id: str, agent_id: str, mission_id: str, estimate: int,
                   budget: int | None) -> Reservation:
    async with pool.acquire() as conn, conn.transaction():
        if budget is not None:
            await conn.execute(Q["budget_lock"], user_id, agent_id)
        usage = await conn.fetchrow(Q["usage_24h"], user_id, agent_id, STALE_RESERVATION_S)
        used = int(usage["used"])
        row_id = await conn.fetchval(Q["reserve_tokens"], user_id, agent_id, mission_id, estimate, budget, used)
    return Reservation(row_id, used)


async def reserve_tokens(pool: asyncpg.Pool, *, user_id: str, agent_id: str, mission_id: str, estimate: int,
                         budget: int | None) -> Reservation:
    """Reserve `estimate` tokens unless the agent's rolling 24 h use is at or over `budget`.

    Checks of one agent are serialised (advisory lock), so concurrent runs see each other's
    reservations. `budget=None` never refuses (legacy missions, agents without a budget).
    """
    reservation: Reservation = await aio_as_trio(_reserve)(pool, user_id, agent_id, mission_id, estimate, budget)
    return reservation


async def _execute(pool: asyncpg.Pool, query: str, *args: object) -> str:
    async with pool.acquire() as conn:
        status: str = await conn.execute(query, *args)
        return status


async def release_tokens(pool: asyncpg.Pool, reservation_id: int) -> None:
    await aio_as_trio(_execute)(pool, Q["release_tokens"], reservation_id)


async def _usage(pool: asyncpg.Pool, user_id: str, agent_id: str) -> Usage24h:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(Q["usage_24h"], user_id, agent_id, STALE_RESERVATION_S)
    return Usage24h(int(row["used"]), int(row["settled"]), int(row["reservations"]))


async def usage_24h(pool: asyncpg.Pool, user_id: str, agent_id: str) -> Usage24h:
    usage: Usage24h = await aio_as_trio(_usage)(pool, user_id, agent_id)
    return usage


async def _prune(pool: asyncpg.Pool, retention_h: int, batch: int) -> int:
    deleted = 0
    async with pool.acquire() as conn:
        while True:  # small batches: never one long lock over the whole table
            status = await conn.execute(Q["prune_usage"], retention_h, batch)
            count = int(status.split()[-1])
            deleted += count
            if count < batch:
                return deleted


async def prune_usage(pool: asyncpg.Pool, *, retention_h: int, batch: int = 1000) -> int:
    """Delete usage rows older than `retention_h` hours, in batches; returns how many."""
    deleted: int = await aio_as_trio(_prune)(pool, retention_h, batch)
    return deleted
