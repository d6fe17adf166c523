"""Deep-research jobs `mana_ai.mission_research_jobs`, one row per mission.

A row is `pending` while mana-research works on it (whatever slot is due, the job is polled),
then `completed` (with the rendered answer) or `failed`, settled for one due slot: a retry of
that slot reuses the outcome instead of paying for a second job; planning the slot, a new slot
or the prune drops it. Driver errors propagate (the research desk catches `DATABASE_ERRORS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg
from trio_asyncio import aio_as_trio

from store.runs import Claim
from store.sql import Q

JobStatus = Literal["pending", "completed", "failed"]


@dataclass(frozen=True)
class ResearchJob:
    task_id: str
    provider_id: str
    status: JobStatus
    due_slot: str
    pending_skips: int
    answer_markdown: str | None
    age_s: float  # since it was submitted, by the database clock


@dataclass(frozen=True)
class ResearchJobRow:
    """A job as inspection shows it: state and timing, never the answer."""

    mission_id: str
    task_id: str
    provider_id: str
    status: JobStatus
    due_slot: str
    pending_skips: int
    last_error: str | None
    submitted_at: datetime
    last_polled_at: datetime | None
    settled_at: datetime | None
    age_s: float


async def _fetch(pool: asyncpg.Pool, query: str, args: tuple[Any, ...]) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch(query, *args))


async def _execute(pool: asyncpg.Pool, query: str, args: tuple[Any, ...]) -> str:
    async with pool.acquire() as conn:
        result: str = await conn.execute(query, *args)
        return result


async def load_job(pool: asyncpg.Pool, user_id: str, mission_id: str) -> ResearchJob | None:
    rows = await aio_as_trio(_fetch)(pool, Q["research_job"], (user_id, mission_id))
    if not rows:
        return None
    r = rows[0]
    return ResearchJob(r["task_id"], r["provider_id"], r["status"], r["due_slot"], r["pending_skips"],
                       r["answer_markdown"], float(r["age_s"]))


async def _submitted(pool: asyncpg.Pool, claim: Claim, task_id: str, provider_id: str, reason: str,
                     retry_in_s: float) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(Q["insert_research_job"], claim.user_id, claim.mission_id, task_id, provider_id,
                           claim.due_slot)
        await conn.execute(Q["park_claim"], *claim.key(), reason, retry_in_s)


async def record_submitted(pool: asyncpg.Pool, claim: Claim, task_id: str, provider_id: str, *, reason: str,
                           retry_in_s: float) -> None:
    """A job was just submitted for the claimed slot: record it and park the slot (no attempt
    used, due again in `retry_in_s`) — one transaction."""
    await aio_as_trio(_submitted)(pool, claim, task_id, provider_id, reason, retry_in_s)


async def _park(pool: asyncpg.Pool, claim: Claim, task_id: str, last_error: str | None, reason: str,
                retry_in_s: float) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(Q["touch_research_job"], claim.user_id, claim.mission_id, task_id, last_error)
        await conn.execute(Q["park_claim"], *claim.key(), reason, retry_in_s)


async def park_pending(pool: asyncpg.Pool, claim: Claim, task_id: str, *, last_error: str | None, reason: str,
                       retry_in_s: float) -> None:
    """The job is still pending: count the parked cycle and hand the slot back (no attempt used),
    due again in `retry_in_s` — one transaction."""
    await aio_as_trio(_park)(pool, claim, task_id, last_error, reason, retry_in_s)


async def settle_job(pool: asyncpg.Pool, claim: Claim, task_id: str, status: Literal["completed", "failed"], *,
                     answer_markdown: str | None = None, reason: str | None = None) -> None:
    """The job ended; its outcome now belongs to the claimed slot."""
    await aio_as_trio(_execute)(pool, Q["settle_research_job"],
                                (claim.user_id, claim.mission_id, task_id, status, claim.due_slot,
                                 answer_markdown, reason))


async def delete_job(pool: asyncpg.Pool, user_id: str, mission_id: str, task_id: str) -> None:
    await aio_as_trio(_execute)(pool, Q["delete_research_job"], (user_id, mission_id, task_id))


async def forget_settled(pool: asyncpg.Pool, claim: Claim) -> None:
    """The claimed slot was planned: drop its settled job (a pending one stays)."""
    await aio_as_trio(_execute)(pool, Q["forget_settled_research"], (claim.user_id, claim.mission_id, claim.due_slot))


async def prune_jobs(pool: asyncpg.Pool, *, older_than_s: float) -> int:
    """Delete rows settled or submitted more than `older_than_s` ago; returns how many."""
    result = await aio_as_trio(_execute)(pool, Q["prune_research_jobs"], (older_than_s,))
    return int(result.split()[-1])


async def jobs_of_user(pool: asyncpg.Pool, user_id: str) -> dict[str, ResearchJobRow]:
    rows = await aio_as_trio(_fetch)(pool, Q["research_jobs_of_user"], (user_id,))
    return {r["mission_id"]: ResearchJobRow(r["mission_id"], r["task_id"], r["provider_id"], r["status"],
                                            r["due_slot"], r["pending_skips"], r["last_error"], r["submitted_at"],
                                            r["last_polled_at"], r["settled_at"], float(r["age_s"]))
            for r in rows}
