"""The token ledger `mana_ai.token_usage`: reserve before an LLM call, settle or release after."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from trio_asyncio import aio_as_trio

from store.sql import Q

# A reservation older than this no longer counts: its run died without settling.
STALE_RESERVATION_S = 3600.0


# Which cap refused a reservation (`Reservation.refused_by`).
AGENT_CAP, USER_CAP, GLOBAL_CAP = "agent", "user", "global"


@dataclass(frozen=True)
class Reservation:
    id: int | None  # None: refused, a cap is reached (`refused_by`)
    used_24h: int   # the agent's use when asked (settled tokens plus live reservations); 0 without a budget
    user_used_24h: int = 0    # the user's, when a user cap applies
    global_used_24h: int = 0  # the deployment's, when a deployment cap applies
    refused_by: str | None = None  # AGENT_CAP, USER_CAP or GLOBAL_CAP; the widest one reached

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
                   budget: int | None, user_cap: int | None, global_cap: int | None) -> Reservation:
    if user_cap is None and global_cap is None:
        async with pool.acquire() as conn, conn.transaction():
            if budget is not None:
                await conn.execute(Q["budget_lock"], user_id, agent_id)
            usage = await conn.fetchrow(Q["usage_24h"], user_id, agent_id, STALE_RESERVATION_S)
            used = int(usage["used"])
            row_id = await conn.fetchval(Q["reserve_tokens"], user_id, agent_id, mission_id, estimate, budget, used)
            return Reservation(row_id, used, refused_by=None if row_id is not None else AGENT_CAP)
    async with pool.acquire() as conn:  # one statement: locks, sums and insert (its own transaction)
        row = await conn.fetchrow(Q["reserve_capped"], user_id, agent_id, mission_id, estimate, budget, user_cap,
                                  global_cap, STALE_RESERVATION_S)
    return _capped(row, budget, user_cap, global_cap)


def _capped(row: asyncpg.Record, budget: int | None, user_cap: int | None, global_cap: int | None) -> Reservation:
    agent_used, user_used, global_used = int(row["agent_used"]), int(row["user_used"]), int(row["global_used"])
    refused_by = None
    if row["id"] is None:  # the widest cap reached names the skip
        if global_cap is not None and global_used >= global_cap:
            refused_by = GLOBAL_CAP
        elif user_cap is not None and user_used >= user_cap:
            refused_by = USER_CAP
        else:
            refused_by = AGENT_CAP
    return Reservation(row["id"], agent_used, user_used, global_used, refused_by)


async def reserve_tokens(pool: asyncpg.Pool, *, user_id: str, agent_id: str, mission_id: str, estimate: int,
                         budget: int | None, user_cap: int | None = None,
                         global_cap: int | None = None) -> Reservation:
    """Reserve `estimate` tokens unless a rolling 24 h use is at or over its cap: the agent's
    `budget`, the user's `user_cap` (all of the user's agents and legacy missions) or the
    deployment's `global_cap`.

    Checks of one agent, one user and the deployment are serialised (advisory locks, taken in
    one order), so concurrent runs see each other's reservations: a cap is passed by at most
    one reservation. `None` never refuses (legacy missions, agents without a budget, no cap).
    """
    reservation: Reservation = await aio_as_trio(_reserve)(pool, user_id, agent_id, mission_id, estimate, budget,
                                                           user_cap, global_cap)
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


async def _caps_usage(pool: asyncpg.Pool, user_id: str, user: bool, deployment: bool) -> tuple[int | None, int | None]:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(Q["caps_usage_24h"], user_id, user, deployment, STALE_RESERVATION_S)
    return (None if row["user_used"] is None else int(row["user_used"]),
            None if row["global_used"] is None else int(row["global_used"]))


async def caps_usage_24h(pool: asyncpg.Pool, user_id: str, *, user: bool,
                         deployment: bool) -> tuple[int | None, int | None]:
    """The rolling 24 h use of `user_id` (when `user`) and of the deployment (when `deployment`),
    as the reservations count it; no round trip when neither is asked for."""
    if not user and not deployment:
        return None, None
    used: tuple[int | None, int | None] = await aio_as_trio(_caps_usage)(pool, user_id, user, deployment)
    return used


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
