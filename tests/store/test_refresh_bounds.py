"""Any JSON a device sends goes through decode → fold → store on a real Postgres: each row is
folded and stored, or rejected and recorded; the refresh never fails and never reads it again."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
import trio
import trio_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import strategies
from seed import fetch
from store.agents import load_agents
from store.bounds import MAX_SLOT_BYTES, REASONS, pg_text_bytes
from store.due import list_due_missions
from store.inspect import rejected_rows, user_missions
from store.pool import close_pool, connect_with_retry
from store.refresh import Rejection, refresh_stream
from store.streams import AGENTS, MISSIONS

DB_PROPERTY = settings(max_examples=20, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large,
    HealthCheck.large_base_example])
STREAMS = {"aiMissions": MISSIONS, "agents": AGENTS}

ROWS = st.lists(st.tuples(
    st.sampled_from(list(STREAMS)),
    st.sampled_from(["u-1", "u-1", "u-1", "u-2", "u-2", "u" * 300]),
    st.sampled_from(["r1", "r1", "r1", "r2", "r2", "r" * 300]),
    st.sampled_from(["insert", "update", "update", "delete"]),
    strategies.object_texts(),
), min_size=1, max_size=5)


async def insert_raw(pool: asyncpg.Pool, table: str, user: str, record_id: str, op: str,
                     data: str) -> tuple[uuid.UUID, datetime]:
    [row] = await fetch(pool, """
        INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_timestamps, client_id)
        VALUES ('ai', $1, $2, $3, $4, $5::text::jsonb, '{}', 'device-1') RETURNING id, created_at""",
        table, record_id, user, op, data)
    return row["id"], row["created_at"]


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


@DB_PROPERTY
@given(rows=ROWS)
def test_every_row_is_stored_or_rejected_and_nothing_raises(db_dsn: str, rows: list[tuple[str, str, str, str, str]],
                                                            ) -> None:
    """A row either reaches its record's snapshot (`last_applied_at` at or after it) or is in
    `mana_ai.rejected_rows` with a known reason; a second refresh reads nothing; reading the
    stored records back (due selection, agents, inspection) does not raise either."""
    with_pool(db_dsn, lambda pool: _stored_or_rejected(pool, rows))


async def _stored_or_rejected(pool: asyncpg.Pool, rows: list[tuple[str, str, str, str, str]]) -> None:
    prefix = uuid.uuid4().hex[:8]  # examples share the database: keep their records apart
    inserted = []
    for table, user, record, op, data in rows:
        change_id, at = await insert_raw(pool, table, user, f"{prefix}-{record}", op, data)
        inserted.append((table, user, f"{prefix}-{record}", change_id, at))
    for stream in STREAMS.values():
        await refresh_stream(pool, stream, lag_s=0)
    rejected = {r["change_id"]: r["reason"] for r in await fetch(
        pool, "SELECT change_id, reason FROM mana_ai.rejected_rows WHERE change_id = ANY($1::uuid[])",
        [row[3] for row in inserted])}
    assert set(rejected.values()) <= set(REASONS)
    for table, user, record, change_id, at in inserted:
        if change_id in rejected:
            continue
        stream = STREAMS[table]
        snapshots = await fetch(pool, f"SELECT last_applied_at FROM {stream.snapshots} "
                                      f"WHERE user_id = $1 AND {stream.id_column} = $2", user, record)
        assert snapshots and snapshots[0]["last_applied_at"] >= at, (table, change_id)
    for stream in STREAMS.values():
        assert (await refresh_stream(pool, stream, lag_s=0)).rows_read == 0
    await list_due_missions(pool, "9999-12-31T23:59:59.999Z", 10_000)
    await load_agents(pool, ["u-1", "u-2"])
    await user_missions(pool, "u-1")
    slots = await fetch(pool, "SELECT max(octet_length(record->>'nextRunAt')) AS n FROM mana_ai.mission_snapshots")
    assert (slots[0]["n"] or 0) <= MAX_SLOT_BYTES


@DB_PROPERTY
@given(values=st.lists(strategies.wild_json_values(), min_size=1, max_size=20))
def test_pg_text_bytes_is_at_least_what_postgres_prints(db_dsn: str, values: list[Any]) -> None:
    """The nextRunAt bound is checked on Postgres' text of the value (`->>`), not Python's."""
    async def check(pool: asyncpg.Pool) -> None:
        printed = await fetch(pool, "SELECT octet_length(v::jsonb #>> '{}') AS n FROM unnest($1::text[]) AS v",
                              [json.dumps(v) for v in values])
        for value, row in zip(values, printed):
            assert pg_text_bytes(value) >= (row["n"] or 0), value
    with_pool(db_dsn, check)


async def test_inspection_reads_each_rejection_back_as_the_refresh_reported_it(pool: asyncpg.Pool) -> None:
    """`GET /internal/rejected` shows the recorded `Rejection` itself, plus when it was recorded."""
    user = f"u-{uuid.uuid4().hex[:8]}"
    change_id, changed_at = await insert_raw(pool, "aiMissions", user, "r" * 300, "insert", '{"state": "active"}')
    reported = [r for r in (await refresh_stream(pool, MISSIONS, lag_s=0)).rejected if r.user_id == user]
    [read] = await rejected_rows(pool, user, 10)
    assert isinstance(read, Rejection)  # one definition of what a rejected row holds
    assert [{f.name: getattr(read, f.name) for f in dataclasses.fields(Rejection)}] == [
        dataclasses.asdict(r) for r in reported]
    assert (read.change_id, read.changed_at, read.reason) == (change_id, changed_at, "id-too-long")
    assert read.rejected_at >= changed_at
