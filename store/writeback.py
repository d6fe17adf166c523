"""The write-back (reference §5.5), fenced by the run ledger (DESIGN §4 row 7).

One transaction: lock the ledger row only if this claim still holds the lease; read the
mission's freshest state (snapshot + any newer rows); INSERT the reference's row inside
withUser; mark the slot planned. A run whose lease was taken over writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from trio_asyncio import aio_as_trio

from store.errors import LeaseLost, MissionGone
from store.fold import ChangeRow, FoldState, fold_rows
from store.runs import Claim
from store.sql import Q
from store.usage import TokenUsage, record_usage_on


@dataclass(frozen=True)
class Provenance:
    outcome: str  # "planned" | "empty-plan"
    model: str
    prompt_hash: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class WriteBack:
    iteration: Mapping[str, Any]  # the new server iteration (planner.plan_to_iteration)
    actor: Mapping[str, Any]
    now_iso: str


@dataclass(frozen=True)
class Written:
    iterations: int
    snapshot_cursor: datetime | None


def write_back_row(existing_iterations: Any, write: WriteBack) -> tuple[dict[str, Any], dict[str, str]]:
    """(data, field_timestamps) exactly as the reference writes them (pure)."""
    base = list(existing_iterations) if isinstance(existing_iterations, list) else []
    data = {"iterations": [*base, dict(write.iteration)], "updatedAt": write.now_iso}
    return data, {"iterations": write.now_iso, "updatedAt": write.now_iso}


async def _freshest(conn: asyncpg.Connection, claim: Claim) -> tuple[FoldState, datetime | None]:
    snap = await conn.fetchrow(Q["mission_snapshot"], claim.user_id, claim.mission_id)
    if snap is None:
        return FoldState(), None
    state = FoldState.from_snapshot_record(snap["record"], snap["tombstone"])
    rows = await conn.fetch(Q["mission_rows_after"], claim.user_id, claim.mission_id, snap["last_applied_at"])
    changes = [ChangeRow(r["record_id"], r["op"], r["data"], r["field_timestamps"], r["created_at"]) for r in rows]
    return fold_rows(claim.mission_id, changes, seed=state), snap["last_applied_at"]


async def _write(pool: asyncpg.Pool, claim: Claim, write: WriteBack, provenance: Provenance,
                 usage: TokenUsage | None) -> Written:
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval(Q["hold_claim_as_user"], *claim.key(), claim.user_id) is None:
            raise LeaseLost(f"lease lost on mission={claim.mission_id} slot={claim.due_slot}")
        fresh, cursor = await _freshest(conn, claim)
        if fresh.tombstone:
            raise MissionGone(f"mission {claim.mission_id} was deleted while it was planned")
        existing = (fresh.record or {}).get("iterations")
        data, stamps = write_back_row(existing, write)
        # the connection's jsonb codec encodes these (store/pool.py)
        await conn.execute(Q["insert_write_back"], claim.mission_id, claim.user_id, data, stamps,
                           dict(write.actor))
        await conn.execute(Q["mark_planned"], *claim.key(), provenance.outcome, write.iteration["id"],
                           provenance.prompt_tokens, provenance.completion_tokens, provenance.model,
                           provenance.prompt_hash, cursor)
        if usage is not None:
            await record_usage_on(conn, usage)
    return Written(len(data["iterations"]), cursor)


async def write_back(pool: asyncpg.Pool, claim: Claim, write: WriteBack, provenance: Provenance,
                     usage: TokenUsage | None = None) -> Written:
    """Append the iteration to the mission (one sync_changes row), mark the slot planned and
    record the call's token usage — one transaction."""
    written: Written = await aio_as_trio(_write)(pool, claim, write, provenance, usage)
    return written
