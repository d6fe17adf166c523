"""The run ledger `mana_ai.mission_runs`: claims with leases, retries, dead slots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from trio_asyncio import aio_as_trio

from store.due import DueMission
from store.sql import Q


@dataclass(frozen=True)
class Claim:
    """This instance's claim on one due slot; `token` fences every later write."""

    user_id: str
    mission_id: str
    due_slot: str
    token: UUID
    attempt: int

    def key(self) -> tuple[str, str, str, UUID]:
        return (self.user_id, self.mission_id, self.due_slot, self.token)


@dataclass(frozen=True)
class FailResult:
    status: str  # "retry" | "dead"
    attempts: int
    next_attempt_at: datetime | None


async def _claim(pool: asyncpg.Pool, due: list[DueMission], instance_id: str, lease_s: float) -> list[Claim]:
    if not due:
        return []
    slots = [d for d in due if d.mission.next_run_at is not None]
    async with pool.acquire() as conn:
        rows = await conn.fetch(Q["claim_runs"], [d.mission.user_id for d in slots],
                                [d.mission.id for d in slots], [d.mission.next_run_at for d in slots],
                                instance_id, lease_s)
    return [Claim(r["user_id"], r["mission_id"], r["due_slot"], r["lease_token"], r["attempts"]) for r in rows]


async def claim_runs(pool: asyncpg.Pool, due: list[DueMission], *, instance_id: str, lease_s: float) -> list[Claim]:
    """Claim the due slots nobody else holds; one statement for the whole cycle."""
    claims: list[Claim] = await aio_as_trio(_claim)(pool, due, instance_id, lease_s)
    return claims


async def _execute(pool: asyncpg.Pool, query: str, args: tuple[Any, ...]) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch(query, *args))


async def renew_leases(pool: asyncpg.Pool, claims: Sequence[Claim], lease_s: float) -> set[UUID]:
    """Extend every given lease in one statement; returns the tokens still held (lost ones are missing)."""
    if not claims:
        return set()
    rows = await aio_as_trio(_execute)(pool, Q["renew_leases"], (
        [c.user_id for c in claims], [c.mission_id for c in claims], [c.due_slot for c in claims],
        [c.token for c in claims], lease_s))
    return {r["lease_token"] for r in rows}


async def release_claim(pool: asyncpg.Pool, claim: Claim, reason: str) -> None:
    """Hand the slot back without using up an attempt (skips, shutdown)."""
    await aio_as_trio(_execute)(pool, Q["release_claim"], (*claim.key(), reason))


async def release_claims(pool: asyncpg.Pool, claims: Sequence[Claim], reason: str) -> int:
    """`release_claim` for several claims in one statement; returns how many were still held."""
    if not claims:
        return 0
    rows = await aio_as_trio(_execute)(pool, Q["release_claims"], (
        [c.user_id for c in claims], [c.mission_id for c in claims], [c.due_slot for c in claims],
        [c.token for c in claims], reason))
    return len(rows)


async def fail_run(pool: asyncpg.Pool, claim: Claim, *, outcome: str, error: str, max_attempts: int,
                   backoff_s: float) -> FailResult | None:
    """Record a failed attempt: retry after `backoff_s`, or dead after `max_attempts`.

    None when the claim was lost meanwhile (the new owner decides).
    """
    rows = await aio_as_trio(_execute)(pool, Q["fail_run"],
                                       (*claim.key(), max_attempts, backoff_s, error[:2000], outcome))
    if not rows:
        return None
    return FailResult(rows[0]["status"], rows[0]["attempts"], rows[0]["next_attempt_at"])


def backoff_s(attempt: int, *, base_s: float, max_s: float, jitter: float) -> float:
    """Capped exponential backoff for the `attempt`-th failure; `jitter` in [0, 1) spreads it."""
    delay: float = min(max_s, base_s * 2.0 ** max(0, attempt - 1))
    return delay * (0.5 + 0.5 * jitter)
