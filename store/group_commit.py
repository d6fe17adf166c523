"""Group commit of write-backs: those that arrive while one round trip is in flight share the next.

A lone write-back goes out at once (no added wait); under load, every write-back that became
ready during a round trip rides the next one, up to `max_batch` items, so N missions finishing
together cost about one statement (`mana_ai.write_backs`) instead of N. A mission cancelled
while its write-back waits is taken out of the queue; one cancelled while its round trip is in
flight changes nothing there — the statement is fenced by the claim's lease token either way.

Every item stands alone: one that Postgres cannot store, or whose row the refresh would reject,
is refused before it is queued (`RowRefused`), and a batch statement that fails for its data
is sent again item by item (`store.writeback.write_batch`): only the item at fault fails.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import asyncpg
import trio

from planner.storable import RowBounds
from store.errors import DATABASE_ERRORS, RowRefused
from store.sync_schema import V0_6_SCHEMA, SyncSchema
from store.writeback import Verdict, WriteRequest, Written, check_request, settle, write_batch

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Pending:
    request: WriteRequest
    done: trio.Event = field(default_factory=trio.Event)
    verdict: Verdict | None = None
    error: Exception | None = None


class GroupCommit:
    """Owns the write-back round trips of one daemon; `run` lives in the runtime's nursery."""

    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = 64, sync: SyncSchema = V0_6_SCHEMA,
                 bounds: RowBounds = RowBounds()) -> None:
        self._pool = pool
        self._sync = sync
        self._bounds = bounds  # the refresh's (MANA_AI_MAX_*): no row is written that it would reject
        self._max_batch = max_batch
        self._queue: list[_Pending] = []
        self._wake = trio.Event()
        self._closed = False
        self.round_trips = 0  # statements sent (tests and benchmarks read it)
        self.items = 0

    async def write(self, request: WriteRequest) -> Written:
        """Write one mission's plan back; raises as `store.writeback.write_back` does."""
        if self._closed:
            raise trio.ClosedResourceError("the write-back queue is closed")
        problem = check_request(request, self._bounds)
        if problem is not None:  # never sent: it would fail the statement of everyone batched with it
            raise RowRefused(problem.reason, f"the iteration holds {problem.detail}")
        pending = _Pending(request)
        self._queue.append(pending)
        self._wake.set()
        try:
            await pending.done.wait()
        except trio.Cancelled:
            if pending in self._queue:  # not sent yet: it never will be
                self._queue.remove(pending)
            raise
        if pending.error is not None:
            raise pending.error
        assert pending.verdict is not None
        return await settle(self._pool, request, pending.verdict, sync=self._sync,
                            bounds=self._bounds)  # careful path when needed

    def close(self) -> None:
        """No new write-backs; `run` returns once the queued ones went out."""
        self._closed = True
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            if not self._queue:
                if self._closed:
                    return
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
            await self._send(batch)

    async def _send(self, batch: list[_Pending]) -> None:
        self.round_trips += 1
        self.items += len(batch)
        try:
            answers = await write_batch(self._pool, [p.request for p in batch], sync=self._sync, bounds=self._bounds)
        except DATABASE_ERRORS as exc:  # the statement failed as a whole (not for its data): each run decides
            for pending in batch:
                pending.error = exc
                pending.done.set()
            return
        except BaseException as exc:  # cancelled (shutdown) or a bug: nobody may wait forever
            for pending in batch:
                pending.error = exc if isinstance(exc, Exception) else trio.ClosedResourceError("shutting down")
                pending.done.set()
            raise
        for pending, answer in zip(batch, answers):
            if isinstance(answer, Verdict):
                pending.verdict = answer
            else:  # its own statement failed (the batch's failed for its data)
                pending.error = answer
            pending.done.set()
