"""Due-mission selection (the TypeScript service's, read from the snapshots)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from trio_asyncio import aio_as_trio

from store.records import Mission
from store.sql import Q


@dataclass(frozen=True)
class DueMission:
    mission: Mission
    record: dict[str, Any]
    snapshot_cursor: datetime


def _instant(now_iso: str) -> datetime:
    now = datetime.fromisoformat(now_iso)  # the app clock's ISO text (…Z)
    if now.tzinfo is None:
        raise ValueError(f"the due query's clock needs an offset: {now_iso!r}")
    return now


async def _due(pool: asyncpg.Pool, now_iso: str, limit: int, folded_until: tuple[datetime, UUID] | None,
               ) -> list[DueMission]:
    now = _instant(now_iso)  # a timestamptz parameter: the planner estimates with its value
    async with pool.acquire() as conn:
        if folded_until is None:
            rows = await conn.fetch(Q["due_missions"], now, limit)
        else:
            rows = await conn.fetch(Q["due_missions_folded"], now, limit, *folded_until)
    return [DueMission(Mission.from_record(r["user_id"], r["record"]), r["record"], r["last_applied_at"])
            for r in rows]


async def list_due_missions(pool: asyncpg.Pool, now_iso: str, limit: int = 1000, *,
                            folded_until: tuple[datetime, UUID] | None = None) -> list[DueMission]:
    """Active, not deleted missions whose `nextRunAt` names an instant at or before `now_iso` and whose
    slot the run ledger lets through; the `limit` oldest. With `folded_until` (the last row a
    refresh still in progress has folded), only missions without a row after it."""
    due: list[DueMission] = await aio_as_trio(_due)(pool, now_iso, limit, folded_until)
    return due


@dataclass(frozen=True)
class NextWake:
    """Seconds from now until the next mission can become due (None: nothing scheduled)."""

    seconds: float | None


def _seconds_until(value: datetime | None, now: datetime) -> float | None:
    return None if value is None else max(0.0, (value - now).total_seconds())


async def _next_wake(pool: asyncpg.Pool, now: datetime) -> NextWake:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(Q["next_wake"], now)
    candidates = [_seconds_until(row["next_run_at"], now),  # an instant, on the app clock like the due query
                  _seconds_until(row["next_retry_at"], row["db_now"]),
                  _seconds_until(row["next_lease_expiry"], row["db_now"])]
    known = [c for c in candidates if c is not None]
    return NextWake(min(known) if known else None)


async def next_wake(pool: asyncpg.Pool, now: datetime) -> NextWake:
    """How long until the earliest future nextRunAt instant, retry or lease expiry (one query)."""
    wake: NextWake = await aio_as_trio(_next_wake)(pool, now)
    return wake
