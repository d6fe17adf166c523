"""Due-mission selection (reference §5.1, read from the snapshots)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from trio_asyncio import aio_as_trio

from store.records import Mission
from store.sql import Q


@dataclass(frozen=True)
class DueMission:
    mission: Mission
    record: dict[str, Any]
    snapshot_cursor: datetime


async def _due(pool: asyncpg.Pool, now_iso: str) -> list[DueMission]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(Q["due_missions"], now_iso)
    return [DueMission(Mission.from_record(r["user_id"], r["record"]), r["record"], r["last_applied_at"])
            for r in rows]


async def list_due_missions(pool: asyncpg.Pool, now_iso: str) -> list[DueMission]:
    """Active, not deleted missions whose string `nextRunAt` is at or before `now_iso`."""
    due: list[DueMission] = await aio_as_trio(_due)(pool, now_iso)
    return due
