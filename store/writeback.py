"""The write-back (the TypeScript service's row), fenced by the run ledger so one slot is written once.

One transaction per mission: lock the ledger row only if this claim still holds the lease;
read the mission's freshest state (snapshot + any newer rows); INSERT the TypeScript service's row
inside withUser; mark the slot planned; record the token usage. A run whose lease was taken
over writes nothing.

Fast path: `mana_ai.write_backs` (migration 0008) does the same for a whole batch in one
statement, one round trip, when the snapshot is the freshest state. The row written is that of
the `sync_changes` generation found at start (store/sync_schema.py). An item it cannot settle
that way (newer rows than the snapshot, no snapshot, an error) takes the careful path here.

Every item stands alone. Before it is sent, its iteration and actor are checked with the rules
the refresh reads rows with (`planner.storable`; `check_request`): what Postgres cannot store,
or the refresh would reject, never enters a batch. The row itself is measured where it is built
(in the statement, migration 0016; here on the careful path) and refused when it would exceed
MANA_AI_MAX_ROW_BYTES (`RowRefused`). A batch statement that still fails for its data is sent
again one item at a time (`write_batch`), so only the item at fault fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from trio_asyncio import aio_as_trio

from planner.storable import (ITERATION_DEPTH, ROW_TOO_LARGE, Rejected, RowBounds, row_size_problem, stored_size,
                              value_problem)
from store.errors import DATABASE_ERRORS, LeaseLost, MissionGone, RowRefused
from store.fold import ChangeRow, FoldState, fold_rows
from store.runs import Claim
from store.sql import Q
from store.sync_schema import V0_6_SCHEMA, SyncSchema
from store.usage import TokenUsage, record_usage_on


@dataclass(frozen=True)
class Provenance:
    outcome: str  # "planned" | "empty-plan"
    model: str
    prompt_hash: str
    prompt_tokens: int
    completion_tokens: int
    planner_mode: str = "json"  # "json" | "tools" (MANA_AI_PLANNER)
    planner_rounds: int = 1     # LLM rounds the plan took (always 1 in json mode)


@dataclass(frozen=True)
class WriteBack:
    iteration: Mapping[str, Any]  # the new server iteration (planner.plan_to_iteration)
    actor: Mapping[str, Any]
    now_iso: str


@dataclass(frozen=True)
class Written:
    iterations: int
    snapshot_cursor: datetime | None


def write_back_row(existing_iterations: Any, write: WriteBack,
                   sync: SyncSchema = V0_6_SCHEMA) -> tuple[dict[str, Any], dict[str, str]]:
    """(data, stamps) exactly as the TypeScript service writes them to a table of this generation (pure)."""
    base = list(existing_iterations) if isinstance(existing_iterations, list) else []
    return sync.write_back_row([*base, dict(write.iteration)], write.now_iso)


async def _freshest(conn: asyncpg.Connection, claim: Claim, sync: SyncSchema) -> tuple[FoldState, datetime | None]:
    snap = await conn.fetchrow(Q["mission_snapshot"], claim.user_id, claim.mission_id)
    if snap is None:
        return FoldState(), None
    state = FoldState.from_snapshot_record(snap["record"], snap["tombstone"])
    rows = await conn.fetch(sync.sql("mission_rows_after"), claim.user_id, claim.mission_id, snap["last_applied_at"])
    changes = [ChangeRow(r["record_id"], r["op"], r["data"], r["field_timestamps"], r["created_at"]) for r in rows]
    return fold_rows(claim.mission_id, changes, seed=state), snap["last_applied_at"]


def row_problem(data: Mapping[str, Any], stamps: Mapping[str, str], bounds: RowBounds) -> Rejected | None:
    """Why the refresh would reject a row with this `data` and these stamps, or None (pure): the
    rules of `store.bounds.check_row`, on values, with the row's size as Postgres prints it."""
    sizes = []
    for value in (data, stamps):
        size = stored_size(value, bounds)
        if isinstance(size, Rejected):
            return size
        sizes.append(size)
    return row_size_problem(sum(sizes), bounds)


async def _write(pool: asyncpg.Pool, claim: Claim, write: WriteBack, provenance: Provenance,
                 usage: TokenUsage | None, sync: SyncSchema, bounds: RowBounds) -> Written:
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval(Q["hold_claim_as_user"], *claim.key(), claim.user_id) is None:
            raise LeaseLost(f"lease lost on mission={claim.mission_id} slot={claim.due_slot}")
        fresh, cursor = await _freshest(conn, claim, sync)
        if fresh.tombstone:
            raise MissionGone(f"mission {claim.mission_id} was deleted while it was planned")
        existing = (fresh.record or {}).get("iterations")
        data, stamps = write_back_row(existing, write, sync)
        # newer rows were folded here unchecked: the whole row is judged as the refresh will judge it
        problem = row_problem(data, stamps, bounds)
        if problem is not None:
            detail = (f"the mission's row would be {problem.detail} (MANA_AI_MAX_ROW_BYTES)"
                      if problem.reason == ROW_TOO_LARGE else f"the mission's row would hold {problem.detail}")
            raise RowRefused(problem.reason, detail)  # rolls the transaction back
        # the connection's jsonb codec encodes these (store/pool.py)
        await conn.execute(sync.insert_write_back, claim.mission_id, claim.user_id, data, stamps,
                           dict(write.actor))
        await conn.execute(Q["mark_planned"], *claim.key(), provenance.outcome, write.iteration["id"],
                           provenance.prompt_tokens, provenance.completion_tokens, provenance.model,
                           provenance.prompt_hash, cursor, provenance.planner_mode, provenance.planner_rounds)
        if usage is not None:
            await record_usage_on(conn, usage)
    return Written(len(data["iterations"]), cursor)


async def write_back_carefully(pool: asyncpg.Pool, claim: Claim, write: WriteBack, provenance: Provenance,
                               usage: TokenUsage | None = None, *, sync: SyncSchema = V0_6_SCHEMA,
                               bounds: RowBounds = RowBounds()) -> Written:
    """Append the iteration to the mission (one sync_changes row), mark the slot planned and
    record the call's token usage — one transaction, folding rows newer than the snapshot.
    `RowRefused` (nothing written) when the refresh would reject the row."""
    written: Written = await aio_as_trio(_write)(pool, claim, write, provenance, usage, sync, bounds)
    return written


@dataclass(frozen=True)
class WriteRequest:
    claim: Claim
    write: WriteBack
    provenance: Provenance
    usage: TokenUsage | None


def check_request(request: WriteRequest, bounds: RowBounds) -> Rejected | None:
    """Why this write-back cannot enter a batch, or None (pure): its iteration as it sits in the
    row, and its actor, must be values Postgres stores and the refresh reads back."""
    for value, depth in ((request.write.iteration, ITERATION_DEPTH), (request.write.actor, 0),
                         (request.write.now_iso, 0)):
        problem = value_problem(value, bounds, depth=depth)
        if problem is not None:
            return problem
    return None


def key_order(request: WriteRequest) -> tuple[str, str, str]:
    """The run ledger's primary key: every statement locks `mission_runs` rows in this order."""
    return (request.claim.user_id, request.claim.mission_id, request.claim.due_slot)


# what the fast path answers for one item (migrations 0008, 0010, 0016)
FAST_VERDICTS = ("written", "lease-lost", "gone", "stale", "missing", "failed", "too-large")


@dataclass(frozen=True)
class Verdict:
    kind: str  # one of FAST_VERDICTS
    written: Written | None = None
    error_code: str | None = None


def fast_item(request: WriteRequest, bounds: RowBounds = RowBounds()) -> dict[str, Any]:
    """One item of `mana_ai.write_backs`' argument (pure)."""
    claim, provenance, usage = request.claim, request.provenance, request.usage
    return {"max_row_bytes": bounds.max_row_bytes,
        "user_id": claim.user_id, "mission_id": claim.mission_id, "due_slot": claim.due_slot,
        "token": str(claim.token), "iteration": dict(request.write.iteration), "actor": dict(request.write.actor),
        "now_iso": request.write.now_iso, "outcome": provenance.outcome, "model": provenance.model,
        "prompt_hash": provenance.prompt_hash, "prompt_tokens": provenance.prompt_tokens,
        "completion_tokens": provenance.completion_tokens,
        "planner_mode": provenance.planner_mode, "planner_rounds": provenance.planner_rounds,
        "usage": None if usage is None else {
            "reservation_id": usage.reservation_id, "agent_id": usage.agent_id, "iteration_id": usage.iteration_id,
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
    }


async def _write_fast(pool: asyncpg.Pool, items: list[dict[str, Any]], variant: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:  # one statement: its own transaction, one round trip
        return list(await conn.fetch(Q["write_backs"], items, variant))


async def write_backs_fast(pool: asyncpg.Pool, requests: list[WriteRequest], *,
                           sync: SyncSchema = V0_6_SCHEMA, bounds: RowBounds = RowBounds()) -> list[Verdict]:
    """The fast path for a batch, in order; raises only when the statement itself fails."""
    rows: list[asyncpg.Record] = await aio_as_trio(_write_fast)(pool, [fast_item(r, bounds) for r in requests],
                                                                sync.write_variant)
    verdicts = [Verdict("failed", error_code="no-answer")] * len(requests)
    for row in rows:
        written = Written(row["iteration_count"], row["cursor_at"]) if row["verdict"] == "written" else None
        verdicts[row["item_no"] - 1] = Verdict(row["verdict"], written, row["error_code"])
    return verdicts


def is_data_error(exc: BaseException) -> bool:
    """Whether a statement failed for what it was sent rather than for the connection or the
    server: Postgres' classes 22 (data exception: a `jsonb` cast) and 54 (program limit
    exceeded: a batch too large for one value), or an argument the driver could not encode."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in ("22", "54")
    return isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError)  # asyncpg's client DataError


async def write_batch(pool: asyncpg.Pool, requests: list[WriteRequest], *, sync: SyncSchema = V0_6_SCHEMA,
                      bounds: RowBounds = RowBounds()) -> list[Verdict | Exception]:
    """The fast path for a batch in which every item stands alone, in order: its verdict, or the
    error of its own statement. Raises when the batch statement fails for another reason than
    its data (the connection, the server): then the batch failed as a whole."""
    try:
        verdicts: list[Verdict | Exception] = list(await write_backs_fast(pool, requests, sync=sync, bounds=bounds))
        return verdicts
    except DATABASE_ERRORS as exc:
        if len(requests) == 1 or not is_data_error(exc):
            raise
    # one item made the statement fail: each on its own (in key order), so only that one fails
    answers: list[Verdict | Exception] = [Verdict("failed", error_code="no-answer")] * len(requests)
    for index in sorted(range(len(requests)), key=lambda i: key_order(requests[i])):
        try:
            [answers[index]] = await write_backs_fast(pool, [requests[index]], sync=sync, bounds=bounds)
        except DATABASE_ERRORS as error:
            answers[index] = error
    return answers


async def settle(pool: asyncpg.Pool, request: WriteRequest, verdict: Verdict, *,
                 sync: SyncSchema = V0_6_SCHEMA, bounds: RowBounds = RowBounds()) -> Written:
    """What a fast-path verdict means for its run: written, an error, or the careful path."""
    if verdict.kind == "written" and verdict.written is not None:
        return verdict.written
    claim = request.claim
    if verdict.kind == "lease-lost":
        raise LeaseLost(f"lease lost on mission={claim.mission_id} slot={claim.due_slot}")
    if verdict.kind == "gone":
        raise MissionGone(f"mission {claim.mission_id} was deleted while it was planned")
    if verdict.kind == "too-large":
        raise RowRefused(ROW_TOO_LARGE, f"the mission's row would be {verdict.error_code} bytes > "
                                        f"{bounds.max_row_bytes} (MANA_AI_MAX_ROW_BYTES)")
    return await write_back_carefully(pool, claim, request.write, request.provenance, request.usage, sync=sync,
                                      bounds=bounds)


async def write_back(pool: asyncpg.Pool, claim: Claim, write: WriteBack, provenance: Provenance,
                     usage: TokenUsage | None = None, *, sync: SyncSchema = V0_6_SCHEMA,
                     bounds: RowBounds = RowBounds()) -> Written:
    """One write-back on its own: the fast path, the careful one when the snapshot is behind.
    `RowRefused` (nothing written) for a row the refresh would reject."""
    request = WriteRequest(claim, write, provenance, usage)
    problem = check_request(request, bounds)
    if problem is not None:
        raise RowRefused(problem.reason, f"the iteration holds {problem.detail}")
    [verdict] = await write_backs_fast(pool, [request], sync=sync, bounds=bounds)
    return await settle(pool, request, verdict, sync=sync, bounds=bounds)
