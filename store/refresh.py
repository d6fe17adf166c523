"""Incremental snapshot refresh with a stable horizon: proportional to new rows, none lost or replayed.

Per stream, one cursor `(created_at, id)` marks the rows already folded into every
snapshot's `stable_record`. A refresh reads the rows after it, in fold order, page by page:

* rows older than the horizon `now() − lag` are folded into `stable_record` and the cursor
  moves past them; they are never read again;
* newer rows (the tail) are folded on top into `record` only, and read again next time,
  so a row whose transaction commits late, inside the lag window, still lands in order.

An idle refresh over old data reads no rows. Round trips per page are fixed (take the cursor
and read, load snapshots, upsert and move the cursor; one more to record rejected rows, when a
page has any), however many records changed. `refresh_stream` is one transaction that
holds the stream's cursor row, so two instances never refresh a stream at once.
`PagedRefresh` commits each page in its own transaction (small pages first), so the snapshot
actor can dispatch between pages; each page takes the cursor row again and checks that nobody
moved it meanwhile, and the page that reaches the tail reads to the end, so the result is the
same as in one go.

Each row is judged on its own before it is folded (store/bounds.py): `data` and
`field_timestamps` arrive as text and are decoded here within `RowBounds`, ids and
`nextRunAt` are checked against the index limits. A row that fails is skipped — the cursor
moves past it like any other, and its snapshot's `last_applied_at` too — and, once it is
stable, recorded in `mana_ai.rejected_rows` in the same transaction and returned in
`RefreshStats.rejected`, so it is reported exactly once and never blocks another row.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from trio_asyncio import aio_as_trio

from store.bounds import RawRow, Rejected, RowBounds, check_row
from store.fold import ChangeRow, FoldState, RowProblem, fold_rows
from store.records import agent_field_problems, mission_field_problems
from store.sql import Q
from store.sync_schema import V0_6_SCHEMA, SyncSchema
from store.streams import AGENTS, Stream

Key = tuple[str, str]  # (user_id, record_id)
Position = tuple[datetime, uuid.UUID]  # (created_at, id) of a sync_changes row


@dataclass(frozen=True)
class Problem:
    """A malformed row or field, named by user, table and record."""

    user_id: str
    table_name: str
    record_id: str
    kind: str
    detail: str


@dataclass
class RefreshStats:
    table_name: str
    skipped: bool = False  # another instance holds the stream's cursor (or moved it between our pages)
    rows_read: int = 0
    rows_stabilised: int = 0
    snapshots_new: int = 0
    snapshots_updated: int = 0
    users: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


_LOGGED_ID_CHARS = 64


@dataclass(frozen=True)
class Rejection:
    """A stable row skipped by the refresh: what it records in `mana_ai.rejected_rows`, logs once
    and reports in `RefreshStats.rejected` (read back later as `store.inspect.RejectedRow`).

    Ids are cut to `max_id_chars`; `detail` names sizes and limits, never content."""

    change_id: uuid.UUID
    table_name: str
    user_id: str
    record_id: str
    reason: str
    detail: str
    row_bytes: int
    changed_at: datetime

    def log_fields(self) -> dict[str, object]:
        """Context for the one log line of this rejection (ids shortened further)."""
        return {"change_id": str(self.change_id), "table": self.table_name,
                "user": _cut(self.user_id, _LOGGED_ID_CHARS), "record": _cut(self.record_id, _LOGGED_ID_CHARS),
                "reason": self.reason, "detail": self.detail, "row_bytes": self.row_bytes}


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars] + "…"


@dataclass(frozen=True)
class _Stored:
    stable: FoldState
    exists: bool


@dataclass
class _Pending:
    stable: list[ChangeRow]
    tail: list[ChangeRow]
    last_at: datetime


@dataclass(frozen=True)
class _Folded:
    key: Key
    stable: FoldState
    effective: FoldState
    last_applied_at: datetime


def refold(
    record_id: str, stored: FoldState, stable_rows: Sequence[ChangeRow], tail_rows: Sequence[ChangeRow],
    problems: list[RowProblem],
) -> tuple[FoldState, FoldState]:
    """New (stable, effective) states; problems are reported for stable rows only (once).

    Without tail rows the effective state *is* the stable one (the same object), which
    `_write` uses to encode and store it once."""
    stable = fold_rows(record_id, stable_rows, seed=stored, problems=problems)
    effective = fold_rows(record_id, tail_rows, seed=stable) if tail_rows else stable
    return stable, effective


def _raw_row(row: Mapping[str, Any], sync: SyncSchema) -> RawRow:
    return RawRow(row["user_id"], row["record_id"], row["op"], row["data"], row["field_timestamps"],
                  row["row_bytes"], row["created_at"], sync.stamps_column)


def _rejection(stream: Stream, row: Mapping[str, Any], rejected: Rejected, bounds: RowBounds) -> Rejection:
    return Rejection(row["id"], stream.table_name, _cut(row["user_id"], bounds.max_id_chars),
                     _cut(row["record_id"], bounds.max_id_chars), rejected.reason, rejected.detail,
                     row["row_bytes"], row["created_at"])


def _field_problems(stream: Stream, state: FoldState) -> list[str]:
    if state.record is None or state.tombstone:
        return []
    check = agent_field_problems if stream is AGENTS else mission_field_problems
    return check(state.record)


async def _load(conn: asyncpg.Connection, stream: Stream, keys: Iterable[Key]) -> dict[Key, _Stored]:
    keys = list(keys)
    rows = await conn.fetch(stream.query(Q["load_snapshots"]), [k[0] for k in keys], [k[1] for k in keys])
    stored = {}
    for row in rows:
        stable = (FoldState() if row["stable_record"] is None
                  else FoldState.from_snapshot_record(row["stable_record"], row["stable_tombstone"]))
        stored[(row["user_id"], row["record_id"])] = _Stored(stable, exists=True)
    return stored


async def _write(conn: asyncpg.Connection, stream: Stream, folded: list[_Folded], stats: RefreshStats,
                 advance_to: Position | None) -> bool:
    """Upsert the folded snapshots, moving the cursor to `advance_to` in the same statement;
    False when there was nothing to write (and the cursor was not moved)."""
    rows = [f for f in folded if not f.effective.empty]
    if not rows:
        return False
    until, until_id = advance_to or (None, None)
    result = await conn.fetch(
        stream.query(Q["upsert_snapshots"]),
        [f.key[0] for f in rows],
        [f.key[1] for f in rows],
        # None: `record` is `stable_record` (no tail rows), encoded and parsed once
        [None if f.effective is f.stable else json.dumps(f.effective.as_snapshot_record()) for f in rows],
        [_pg_bool(f.effective.tombstone) for f in rows],
        [None if f.stable.empty else json.dumps(f.stable.as_snapshot_record()) for f in rows],
        [_pg_bool(f.stable.tombstone) for f in rows],
        [f.last_applied_at.isoformat() for f in rows],  # aware, µs: Postgres reads it back exactly
        stream.table_name, until, until_id,
    )
    inserted = sum(1 for r in result if r["inserted"])
    stats.snapshots_new += inserted
    stats.snapshots_updated += len(result) - inserted
    return True


def _pg_bool(value: bool) -> str:
    return "t" if value else "f"


async def _record_rejections(conn: asyncpg.Connection, rejections: list[Rejection], stats: RefreshStats) -> None:
    if not rejections:
        return
    inserted = await conn.fetch(
        Q["insert_rejected_rows"],
        [r.change_id for r in rejections], [r.table_name for r in rejections], [r.user_id for r in rejections],
        [r.record_id for r in rejections], [r.reason for r in rejections], [r.detail for r in rejections],
        [r.row_bytes for r in rejections], [r.changed_at for r in rejections],
    )
    new = {row["change_id"] for row in inserted}  # a row recorded before (cursor reset) is not reported again
    stats.rejected.extend(r for r in rejections if r.change_id in new)


async def _fold_and_write(
    conn: asyncpg.Connection, stream: Stream, stable_rows: Sequence[Mapping[str, Any]],
    tail_rows: Sequence[Mapping[str, Any]], stats: RefreshStats, bounds: RowBounds, advance_to: Position | None,
    sync: SyncSchema,
) -> None:
    """Fold the rows into their snapshots and write them; with `advance_to` (stable rows), the
    cursor moves there in the same transaction."""
    grouped: dict[Key, _Pending] = {}
    rejections: list[Rejection] = []
    for rows, is_tail in ((stable_rows, False), (tail_rows, True)):
        for row in rows:
            checked = check_row(_raw_row(row, sync), bounds, missions=stream is not AGENTS)
            if isinstance(checked, Rejected) and not is_tail:  # tail rows are judged again once stable
                rejections.append(_rejection(stream, row, checked, bounds))
            key = (row["user_id"], row["record_id"])
            if len(key[0]) > bounds.max_id_chars or len(key[1]) > bounds.max_id_chars:
                continue  # no snapshot can have this key
            pending = grouped.setdefault(key, _Pending([], [], row["created_at"]))
            # a skipped row counts as applied: the write-back's read of newer rows skips it too
            pending.last_at = row["created_at"]
            if not isinstance(checked, Rejected):
                (pending.tail if is_tail else pending.stable).append(checked)
    await _record_rejections(conn, rejections, stats)
    if not grouped:
        if advance_to is not None:
            await conn.execute(Q["advance_cursor"], stream.table_name, *advance_to)
        return
    stored = await _load(conn, stream, grouped)
    folded = []
    for key, pending in grouped.items():
        seed = stored[key].stable if key in stored else FoldState()
        row_problems: list[RowProblem] = []
        new_stable, effective = refold(key[1], seed, pending.stable, pending.tail, row_problems)
        folded.append(_Folded(key, new_stable, effective, pending.last_at))
        stats.users.add(key[0])
        for p in row_problems:
            stats.problems.append(Problem(key[0], stream.table_name, p.record_id, p.kind, p.detail))
        if pending.stable:  # field problems once per change that reached the stable fold
            for detail in _field_problems(stream, new_stable):
                stats.problems.append(Problem(key[0], stream.table_name, key[1], "bad-field", detail))
    if not await _write(conn, stream, folded, stats, advance_to) and advance_to is not None:
        await conn.execute(Q["advance_cursor"], stream.table_name, *advance_to)


async def _lock_and_read(conn: asyncpg.Connection, stream: Stream, lag_s: float, limit: int,
                        bounds: RowBounds, sync: SyncSchema) -> tuple[asyncpg.Record, list[asyncpg.Record]] | None:
    """The stream's cursor row, locked for this transaction, with the horizon, and the first page
    after it; None when another instance holds it."""
    args = (stream.table_name, lag_s, limit, bounds.max_row_bytes)
    rows: list[asyncpg.Record] = await conn.fetch(sync.sql("lock_and_read_stream"), *args)
    if not rows:  # held by another instance, or not created yet
        await conn.execute(Q["ensure_cursor"], stream.table_name)
        rows = await conn.fetch(sync.sql("lock_and_read_stream"), *args)
    if not rows:
        return None
    return rows[0], [] if rows[0]["id"] is None else rows


async def _fold_from(conn: asyncpg.Connection, stream: Stream, cursor: asyncpg.Record, page: list[asyncpg.Record],
                     horizon: datetime, stats: RefreshStats, bounds: RowBounds, page_size: int,
                     first_page: int | None, sync: SyncSchema) -> Position | None:
    """Fold `page` (the first page after the locked `cursor`) and the pages after it, in this
    transaction.

    With `first_page` (the size `page` was read with), a first page that is full and holds no
    tail row ends the call: its position is returned and the caller commits and goes on from
    there. In every other case the stream is read to its end (None): the horizon is fixed, so
    once a tail row shows up every later row is tail too, and all of them are folded together
    at the end, on top of the final stable records.
    """
    position: Position = (cursor["stable_until"], cursor["stable_id"])
    tail: list[Mapping[str, Any]] = []
    limit = first_page or page_size
    while True:
        stats.rows_read += len(page)
        if not page:
            break
        position = (page[-1]["created_at"], page[-1]["id"])
        stable = [r for r in page if r["created_at"] <= horizon]
        tail.extend(r for r in page if r["created_at"] > horizon)
        if stable:
            # stable rows of this page are final: fold them now, keeping memory bounded
            last = stable[-1]
            await _fold_and_write(conn, stream, stable, [], stats, bounds, (last["created_at"], last["id"]), sync)
            stats.rows_stabilised += len(stable)
        if len(page) < limit:
            break
        if first_page is not None and not tail:
            return position
        limit = page_size
        page = await conn.fetch(sync.sql("read_stream_page"), stream.table_name, *position, limit, bounds.max_row_bytes)
    if tail:
        await _fold_and_write(conn, stream, [], tail, stats, bounds, None, sync)
    return None


async def _refresh(pool: asyncpg.Pool, stream: Stream, lag_s: float, page_size: int,
                   bounds: RowBounds, sync: SyncSchema) -> RefreshStats:
    stats = RefreshStats(stream.table_name)
    async with pool.acquire() as conn, conn.transaction():
        locked = await _lock_and_read(conn, stream, lag_s, page_size, bounds, sync)
        if locked is None:
            stats.skipped = True
            return stats
        cursor, page = locked
        await _fold_from(conn, stream, cursor, page, cursor["horizon"], stats, bounds, page_size, None, sync)
    return stats


async def refresh_stream(pool: asyncpg.Pool, stream: Stream, *, lag_s: float, page_size: int = 5000,
                         bounds: RowBounds = RowBounds(), sync: SyncSchema = V0_6_SCHEMA) -> RefreshStats:
    """Refresh one stream's snapshots in one transaction (one bridged unit of work)."""
    stats: RefreshStats = await aio_as_trio(_refresh)(pool, stream, lag_s, page_size, bounds, sync)
    return stats


@dataclass(frozen=True)
class _Resume:
    """Where the next page of a paged refresh starts, and the horizon its first page fixed."""

    position: Position
    horizon: datetime


async def _refresh_page(pool: asyncpg.Pool, stream: Stream, lag_s: float, page_size: int, bounds: RowBounds,
                        first_page: int, resume: _Resume | None, sync: SyncSchema) -> tuple[RefreshStats, _Resume | None]:
    stats = RefreshStats(stream.table_name)
    async with pool.acquire() as conn, conn.transaction():
        locked = await _lock_and_read(conn, stream, lag_s, first_page, bounds, sync)
        if locked is None:
            stats.skipped = True
            return stats, None
        cursor, page = locked
        if resume is not None and (cursor["stable_until"], cursor["stable_id"]) != resume.position:
            # another instance refreshed the stream between our pages: the rest is its work,
            # and folding rows it already folded again would apply them twice
            stats.skipped = True
            return stats, None
        horizon: datetime = cursor["horizon"] if resume is None else resume.horizon
        after = await _fold_from(conn, stream, cursor, page, horizon, stats, bounds, page_size, first_page, sync)
    return stats, None if after is None else _Resume(after, horizon)


class PagedRefresh:
    """One stream refreshed page by page, each page its own transaction (one bridged unit each),
    so that what is due among the records folded so far can go out before the refresh ends.

    Pages grow from `first_page` rows by `growth` up to `page_size`. The first page fixes the
    horizon for all of them; each page locks the cursor and checks that it is where the last
    page left it (else another instance took over: this refresh ends, as if skipped). A page
    that reaches the tail reads the stream to its end, so tail rows are folded together, on top
    of the final stable records, exactly as `refresh_stream` does: page by page or in one go,
    the snapshots and the cursor end up the same (tests/store/test_paged_refresh.py).
    """

    def __init__(self, pool: asyncpg.Pool, stream: Stream, *, lag_s: float, bounds: RowBounds = RowBounds(),
                 first_page: int = 32, growth: int = 4, page_size: int = 5000,
                 sync: SyncSchema = V0_6_SCHEMA) -> None:
        self._pool = pool
        self._sync = sync
        self._stream = stream
        self._lag_s = lag_s
        self._bounds = bounds
        self._next_size = min(first_page, page_size)
        self._growth = growth
        self._page_size = page_size
        self._resume: _Resume | None = None
        self._reported: set[Problem] = set()
        self.stats = RefreshStats(stream.table_name)
        self.done = False

    @property
    def read_until(self) -> Position | None:
        """The last row read so far while more pages follow (every row up to it is folded)."""
        return None if self._resume is None else self._resume.position

    async def next_page(self) -> None:
        """Fold and commit the next page; `done` once the stream was read to its end."""
        assert not self.done, "the refresh is done"
        stats, self._resume = await aio_as_trio(_refresh_page)(
            self._pool, self._stream, self._lag_s, self._page_size, self._bounds, self._next_size, self._resume,
            self._sync)
        self._merge(stats)
        self.done = self._resume is None
        self._next_size = min(self._next_size * self._growth, self._page_size)

    def _merge(self, page: RefreshStats) -> None:
        total = self.stats
        total.skipped = total.skipped or page.skipped
        total.rows_read += page.rows_read
        total.rows_stabilised += page.rows_stabilised
        total.snapshots_new += page.snapshots_new
        total.snapshots_updated += page.snapshots_updated
        total.users |= page.users
        for problem in page.problems:
            if problem.kind == "bad-field":  # a record's field problems once per refresh, as in one go
                if problem in self._reported:
                    continue
                self._reported.add(problem)
            total.problems.append(problem)
        total.rejected.extend(page.rejected)
