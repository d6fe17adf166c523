"""Dead slots across users: a keyset-paged list, and retry or discard in bulk.

The list and the batches walk the open dead slots (`status = 'dead'`, not discarded) in byte-wise
key order (user, mission, due slot): `idx_mission_runs_dead_open`. Bulk work goes in batches of
at most `BATCH_ROWS` slots, each one statement in its own short transaction (bounded by a
statement and a lock timeout), so a user with a hundred thousand dead slots holds no lock for
long and never blocks anyone else for more than one batch. Only dead slots are touched: a
running, claimed, retrying or planned slot never is. A retry is the single retry's
(`store.inspect.retry_dead_slot`) for each slot: attempts 0, due now, reopened on the snapshot;
a slot its mission has moved on from stays dead and is counted `superseded`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import asyncpg
import trio
from trio_asyncio import aio_as_trio

from store.errors import DRIVER_ERRORS, StoreError
from store.sql import Q

__all__ = ["BATCH_ROWS", "BulkAction", "BulkResult", "DeadSlotRow", "DeadSlotScope", "Key", "START", "UserDeadSlots",
           "count_dead_slots", "dead_slots_page", "dead_slots_per_user", "recover_dead_slots"]

BulkAction = Literal["retry", "discard"]
Key = tuple[str, str, str]  # (user, mission, due slot)
START: Key = ("", "", "")  # before every slot: none has an empty due slot (such a nextRunAt is never due)
BATCH_ROWS = 500
_ANSWER_GRACE_S = 5.0


@dataclass(frozen=True)
class DeadSlotScope:
    """Whose dead slots: everyone's (`user_id` None), one user's, or one agent's of one user."""

    user_id: str | None = None
    agent_id: str | None = None

    def __post_init__(self) -> None:
        if self.agent_id is not None and self.user_id is None:
            raise ValueError("an agent scope needs its user")

    def as_log(self) -> dict[str, str | bool | None]:
        return {"scope_all": self.user_id is None, "scope_user": self.user_id, "scope_agent": self.agent_id}


@dataclass(frozen=True)
class DeadSlotRow:
    user_id: str
    agent_id: str | None  # None: a legacy mission, or its snapshot is gone
    mission_id: str
    due_slot: str
    attempts: int
    error_kind: str | None  # the outcome of the last attempt: error, parse-failed, …
    last_error: str | None  # as stored (redacted when written)
    died_at: datetime | None
    current: bool  # still the mission's due slot: a retry makes it due again

    @property
    def key(self) -> Key:
        return (self.user_id, self.mission_id, self.due_slot)


async def _fetch(pool: asyncpg.Pool, query: str, args: tuple[object, ...]) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch(query, *args))


async def dead_slots_page(pool: asyncpg.Pool, scope: DeadSlotScope, after: Key, limit: int) -> list[DeadSlotRow]:
    """At most `limit` open dead slots of `scope` after the key `after`, in key order."""
    args: tuple[object, ...]
    if scope.user_id is None:
        query, args = Q["dead_slots_page_all"], (*after, limit)
    else:
        query, args = Q["dead_slots_page_of_user"], (scope.user_id, scope.agent_id, *after, limit)
    rows = await aio_as_trio(_fetch)(pool, query, args)
    return [DeadSlotRow(r["user_id"], r["agent_id"], r["mission_id"], r["due_slot"], r["attempts"], r["outcome"],
                        r["last_error"], r["finished_at"], r["current"]) for r in rows]


async def count_dead_slots(pool: asyncpg.Pool, scope: DeadSlotScope) -> int:
    """How many open dead slots `scope` has."""
    rows = await aio_as_trio(_fetch)(pool, Q["dead_slots_count"], (scope.user_id, scope.agent_id))
    return int(rows[0]["total"])


@dataclass(frozen=True)
class UserDeadSlots:
    user_id: str
    agent_id: str | None
    slots: int


async def dead_slots_per_user(pool: asyncpg.Pool, limit: int) -> list[UserDeadSlots]:
    """Open dead slots per user and agent, the users with the most first, at most `limit` rows."""
    rows = await aio_as_trio(_fetch)(pool, Q["dead_slots_per_user"], (limit,))
    return [UserDeadSlots(r["user_id"], r["agent_id"], int(r["slots"])) for r in rows]


@dataclass
class BulkResult:
    """What a bulk retry or discard did so far."""

    action: BulkAction
    scope: DeadSlotScope
    changed: int = 0  # retried, or discarded
    superseded: int = 0  # retry: dead slots their mission has moved on from (left dead)
    batches: int = 0
    complete: bool = False  # False: stopped at the time limit; running it again goes on
    last_key: Key = field(default=START)


@dataclass(frozen=True)
class _Batch:
    taken: int
    changed: int
    last_key: Key | None


async def _run_batch(pool: asyncpg.Pool, query: str, args: tuple[object, ...], timeout_ms: int) -> _Batch:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(Q["bulk_timeouts"], f"{timeout_ms}ms", f"{timeout_ms}ms")
        row = await conn.fetchrow(query, *args)
    assert row is not None  # one row, always
    last = None if row["user_id"] is None else (row["user_id"], row["mission_id"], row["due_slot"])
    return _Batch(int(row["taken"]), int(row["changed"]), last)


async def _batch(pool: asyncpg.Pool, action: BulkAction, scope: DeadSlotScope, after: Key, rows: int,
                 timeout_s: float) -> _Batch:
    args: tuple[object, ...]
    if scope.user_id is None:
        query, args = Q[f"{action}_dead_slots_all"], (*after, rows)
    else:
        query, args = Q[f"{action}_dead_slots_of_user"], (scope.user_id, scope.agent_id, *after, rows)
    try:
        batch: _Batch = await aio_as_trio(_run_batch)(pool, query, args, max(1, round(timeout_s * 1000)))
    except DRIVER_ERRORS as exc:
        raise StoreError(f"bulk {action}: {type(exc).__name__}: {exc}") from exc
    return batch


async def recover_dead_slots(pool: asyncpg.Pool, result: BulkResult, *, batch_rows: int = BATCH_ROWS,
                             batch_timeout_s: float = 10.0, time_limit_s: float = 30.0) -> BulkResult:
    """Retry or discard every open dead slot of `result.scope`, batch by batch, until none is left
    or `time_limit_s` has passed (then `complete` stays False: call again to go on). Each batch
    commits on its own and is counted into `result` at once, so what was done is known when a
    later batch fails or the caller is cancelled.

    Raises `StoreError` when a batch fails, `trio.TooSlowError` when one gets no answer in time
    (the batches before it stay done)."""
    deadline = trio.current_time() + time_limit_s
    while True:
        with trio.fail_after(batch_timeout_s + _ANSWER_GRACE_S):  # the server's own timeout comes first
            batch = await _batch(pool, result.action, result.scope, result.last_key, batch_rows, batch_timeout_s)
        result.batches += 1
        result.changed += batch.changed
        if result.action == "retry":
            result.superseded += batch.taken - batch.changed
        if batch.last_key is not None:
            result.last_key = batch.last_key
        if batch.taken < batch_rows:
            result.complete = True
            return result
        if trio.current_time() >= deadline:
            return result
