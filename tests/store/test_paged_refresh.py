"""The paged refresh (`PagedRefresh`, one transaction per page) against the one-shot refresh
(`refresh_stream`, one transaction) on a real Postgres: same snapshots, cursor and rejections."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import trio
import trio_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_asyncio import aio_as_trio

import strategies
from seed import fetch, insert_rows, mission, update
from store.bounds import RowBounds
from store.pool import close_pool, connect_with_retry
from store.refresh import PagedRefresh, RefreshStats, refresh_stream
from store.streams import MISSIONS

DB_PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
LAG_S = 60.0
#: Rows this far in the future are newer than any horizon (tail); strategies' rows are months old.
FUTURE = datetime.now(timezone.utc) + timedelta(days=1)
LONG_ID = "r" * 300  # over RowBounds.max_id_chars: rejected once stable, never stored


def with_pool(dsn: str, check: Callable[[asyncpg.Pool], Awaitable[None]]) -> None:
    """Run one example in its own trio run and pool (async fixtures do not mix with @given)."""
    async def main() -> None:
        async with trio_asyncio.open_loop():
            pool = await connect_with_retry(dsn, 2, 10)
            try:
                await check(pool)
            finally:
                await close_pool(pool)
    trio.run(main)


@dataclass(frozen=True)
class Row:
    id: uuid.UUID
    user: str
    record: str
    op: str
    data: Any
    stamps: Any
    created_at: datetime


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Row], list[Row]]:
    """Rows of a few missions in two batches (two refreshes): stable rows (months old) in
    order, then tail rows (in the future). Batch 1 is a prefix of each; its tail rows are read
    again by the second refresh, and batch 2's stable rows come before them."""
    keys = st.sampled_from([("u-1", "r1"), ("u-1", "r1"), ("u-1", "r2"), ("u-2", "r1"), ("u-2", "r3"),
                            ("u-1", LONG_ID)])
    storable = strategies.malformed_payloads().filter(lambda p: p[0] in {"insert", "update", "delete"})
    payload = st.one_of(strategies.row_payloads(), strategies.row_payloads(), strategies.row_payloads(), storable)
    rows: list[list[Row]] = []
    for base in (strategies.BASE_CREATED_AT, FUTURE):
        drawn = draw(st.lists(st.tuples(keys, payload, st.uuids()), max_size=14))
        times = draw(strategies.created_ats(len(drawn)))
        rows.append([Row(change_id, user, record, op, data, stamps, base + (at - strategies.BASE_CREATED_AT))
                     for ((user, record), (op, data, stamps), change_id), at in zip(drawn, times)])
    stable, tail = rows
    k = draw(st.integers(0, len(stable)))
    m = draw(st.integers(0, len(tail)))
    return stable[:k] + tail[:m], stable[k:] + tail[m:]


async def _insert(pool: asyncpg.Pool, rows: list[Row]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.executemany(
            """INSERT INTO sync_changes (id, app_id, table_name, record_id, user_id, op, data, field_timestamps,
                                         client_id, created_at)
               VALUES ($1, 'ai', 'aiMissions', $2, $3, $4, $5::text::jsonb, $6::text::jsonb, 'device-1', $7)""",
            [(r.id, r.record, r.user, r.op, json.dumps(r.data), json.dumps(r.stamps), r.created_at) for r in rows])


async def _reset(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for table in ("mana_ai.mission_snapshots", "mana_ai.refresh_cursors", "mana_ai.rejected_rows",
                      "public.sync_changes"):
            await conn.execute(f"DELETE FROM {table}")


async def _state(pool: asyncpg.Pool) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every stored snapshot, the cursors and the recorded rejections (JSON compared as values)."""
    snapshots = [tuple(r) for r in await fetch(pool, """
        SELECT user_id, mission_id, record::text, tombstone, stable_record::text, stable_tombstone, last_applied_at
        FROM mana_ai.mission_snapshots ORDER BY user_id, mission_id""")]
    cursors = [tuple(r) for r in await fetch(
        pool, "SELECT stream, stable_until, stable_id FROM mana_ai.refresh_cursors")]
    rejected = [tuple(r) for r in await fetch(
        pool, "SELECT change_id, reason, detail FROM mana_ai.rejected_rows ORDER BY change_id")]
    return snapshots, cursors, rejected


def _summary(stats: RefreshStats) -> tuple[Any, ...]:
    return (stats.skipped, stats.rows_read, stats.rows_stabilised, sorted(stats.users),
            sorted((p.user_id, p.record_id, p.kind, p.detail) for p in stats.problems),
            sorted(r.change_id for r in stats.rejected))


async def _paged(pool: asyncpg.Pool, first_page: int, growth: int, page_size: int) -> RefreshStats:
    pages = PagedRefresh(pool, MISSIONS, lag_s=LAG_S, first_page=first_page, growth=growth, page_size=page_size)
    positions = []
    while not pages.done:
        await pages.next_page()
        if not pages.done:
            assert pages.read_until is not None
            positions.append(pages.read_until)
    assert positions == sorted(positions) and len(set(positions)) == len(positions)  # every page moves on
    return pages.stats


@DB_PROPERTY
@given(batches=histories(), first_page=st.integers(1, 6), growth=st.integers(1, 3), extra=st.integers(0, 6))
def test_paged_refresh_equals_the_one_shot_refresh(db_dsn: str, batches: tuple[list[Row], list[Row]],
                                                   first_page: int, growth: int, extra: int) -> None:
    """For any history in two batches (stable and tail rows, malformed rows, rows too long to
    store) and any page sizes, refreshing page by page leaves the same snapshots (record and
    stable_record, tombstones, last_applied_at), cursor and rejected rows as one transaction,
    after each refresh, and reports the same rows, problems and rejections."""
    async def check(pool: asyncpg.Pool) -> None:
        results = []
        for paged in (False, True):
            await aio_as_trio(_reset)(pool)
            after = []
            for batch in batches:
                await aio_as_trio(_insert)(pool, batch)
                if paged:
                    stats = await _paged(pool, first_page, growth, first_page + extra)
                else:
                    stats = await refresh_stream(pool, MISSIONS, lag_s=LAG_S)
                after.append((_summary(stats), await _state(pool)))
            results.append(after)
        assert results[0] == results[1]
    with_pool(db_dsn, check)


AGO = datetime.now(timezone.utc) - timedelta(minutes=10)


async def test_pages_grow_and_each_is_committed_on_its_own(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, *[{**mission(f"m{i:02d}"), "created_at": AGO + timedelta(milliseconds=i)}
                              for i in range(20)])
    pages = PagedRefresh(pool, MISSIONS, lag_s=5, first_page=2, growth=3, page_size=10)
    read = []
    while not pages.done:
        await pages.next_page()
        committed = await fetch(pool, "SELECT count(*) AS n FROM mana_ai.mission_snapshots")
        read.append((pages.stats.rows_read, committed[0]["n"]))
    assert read == [(2, 2), (8, 8), (18, 18), (20, 20)]  # pages of 2, 6, 10, then the short rest
    assert (await refresh_stream(pool, MISSIONS, lag_s=5)).rows_read == 0


async def test_a_refresh_another_instance_did_between_pages_is_not_folded_twice(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, *[{**mission(f"m{i:02d}"), "created_at": AGO + timedelta(milliseconds=i)}
                              for i in range(6)],
                      update("aiMissions", "m00", {"title": "later"}, "2026-04-15T10:00:00.000Z",
                             created_at=AGO + timedelta(seconds=1)))
    pages = PagedRefresh(pool, MISSIONS, lag_s=5, first_page=2)
    await pages.next_page()
    assert not pages.done and pages.stats.rows_read == 2
    other = await refresh_stream(pool, MISSIONS, lag_s=5)  # another instance: the rest, in one go
    assert other.rows_read == 5
    await pages.next_page()  # finds the cursor moved: stops without reading
    assert pages.done and pages.stats.skipped and pages.stats.rows_read == 2
    rows = await fetch(pool, "SELECT mission_id, record->>'title' AS title FROM mana_ai.mission_snapshots "
                             "WHERE record = stable_record ORDER BY mission_id")
    assert [(r["mission_id"], r["title"]) for r in rows] == [("m00", "later")] + [
        (f"m{i:02d}", "Wochenreview") for i in range(1, 6)]


async def test_a_page_that_reaches_the_tail_reads_the_stream_to_its_end(pool: asyncpg.Pool) -> None:
    now = datetime.now(timezone.utc)
    await insert_rows(pool, {**mission("m1"), "created_at": AGO},
                      *[update("aiMissions", "m1", {"title": f"t{i}"}, f"2026-04-15T10:00:0{i}.000Z",
                               created_at=now + timedelta(milliseconds=i)) for i in range(5)])
    pages = PagedRefresh(pool, MISSIONS, lag_s=30, first_page=2, page_size=2, bounds=RowBounds())
    await pages.next_page()  # the first page holds a tail row: all 6 rows, folded together
    assert pages.done and (pages.stats.rows_read, pages.stats.rows_stabilised) == (6, 1)
    [snap] = await fetch(pool, "SELECT record, stable_record FROM mana_ai.mission_snapshots")
    assert snap["record"]["title"] == "t4" and snap["stable_record"]["title"] == "Wochenreview"
