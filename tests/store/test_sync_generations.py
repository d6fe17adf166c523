"""Both generations of mana-sync's `sync_changes` (v0.6 `field_timestamps`, and `field_meta` +
`origin` after the field-meta overhaul), plus the transitional table, on real Postgres."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from actors.snapshot import SnapshotActor
from conftest import TEMPLATE, PgServer
from daemon import daemon_settings
from fake_llm import plan_reply, running_fake_llm
from observability.metrics import Metrics
from planning import CREATE_TASK, agent_row, ledger, planning_runtime
from seed import fetch, insert_rows, mission, update
from store.due import list_due_missions
from store.errors import SchemaMismatch
from store.migrate import migrate, read_sync_schema
from store.pool import close_pool, connect_with_retry
from store.replay import replay_records
from store.runs import Claim, claim_runs
from store.sync_schema import (
    FIELD_META,
    TRANSITIONAL,
    V06,
    V0_6_SCHEMA,
    SyncSchema,
    detect_sync_schema,
)
from store.writeback import Provenance, WriteBack, WriteRequest, write_back, write_back_carefully, write_backs_fast

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)
NOW_ISO = "2026-11-30T12:00:00.000Z"
BASE = {"id", "app_id", "table_name", "record_id", "user_id", "op", "data", "client_id", "created_at",
        "schema_version", "actor"}
_names = itertools.count()


# --- detection (pure) -------------------------------------------------------------------------

@pytest.mark.parametrize(("columns", "generation", "stamps", "origin"), [
    (BASE | {"field_timestamps"}, V06, "field_timestamps", False),
    (BASE | {"field_timestamps", "origin", "space_id"}, TRANSITIONAL, "field_timestamps", True),
    (BASE | {"field_meta", "origin", "space_id"}, FIELD_META, "field_meta", True),
    (BASE | {"field_meta"}, FIELD_META, "field_meta", False),
    (BASE | {"field_meta", "field_timestamps", "origin"}, FIELD_META, "field_meta", True),  # the newer wins
])
def test_the_generation_follows_the_columns(columns: set[str], generation: str, stamps: str, origin: bool) -> None:
    found = detect_sync_schema(columns)
    assert isinstance(found, SyncSchema)
    assert (found.generation, found.stamps_column, found.origin) == (generation, stamps, origin)


def test_a_table_with_neither_stamps_column_is_refused_by_name() -> None:
    problem = detect_sync_schema(BASE)
    assert problem == ("public.sync_changes lacks column(s) field_meta (or field_timestamps): upgrade mana-sync "
                       "(its migration adds them), or unset SYNC_DATABASE_URL to use the embedded database")
    assert isinstance(detect_sync_schema(set()), str) and "does not exist" in str(detect_sync_schema(set()))


def test_statements_name_the_generations_column_and_keep_their_result_names() -> None:
    field_meta = SyncSchema("field_meta", origin=True)
    for name in ("lock_and_read_stream", "read_stream_page", "mission_rows_after", "replay_records"):
        assert "__stamps__" not in field_meta.sql(name) and "field_meta" in field_meta.sql(name)
        assert "AS field_timestamps" in field_meta.sql(name)  # rows read the same in every generation
        assert "field_meta" not in V0_6_SCHEMA.sql(name)
    assert "origin" in field_meta.insert_write_back and "origin" not in V0_6_SCHEMA.insert_write_back


def test_the_write_back_row_of_each_generation() -> None:
    iterations: list[Any] = [{"id": "it-1"}]
    assert SyncSchema("field_meta", origin=True).write_back_row(iterations, NOW_ISO) == (
        {"iterations": iterations}, {"iterations": NOW_ISO})
    for schema in (V0_6_SCHEMA, SyncSchema("field_timestamps", origin=True)):
        assert schema.write_back_row(iterations, NOW_ISO) == (
            {"iterations": iterations, "updatedAt": NOW_ISO}, {"iterations": NOW_ISO, "updatedAt": NOW_ISO})


# --- real tables of each generation -------------------------------------------------------------

async def _migrated(dsn: str, **kwargs: Any) -> None:
    pool = await connect_with_retry(dsn, 2, 10)
    try:
        await migrate(pool, **kwargs)
    finally:
        await close_pool(pool)


@pytest.fixture
def generation_dsn(pg: PgServer, request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """A migrated database whose sync_changes is of the requested generation."""
    generation = request.param
    template = None if generation == FIELD_META else TEMPLATE
    name = f"mana_ai_g{os.getpid()}_{next(_names)}"
    with pg.scratch_database(name, template) as dsn:
        if generation == TRANSITIONAL:  # a pre-overhaul table that gained the overhaul's new columns
            pg.sql("ALTER TABLE sync_changes ADD COLUMN origin TEXT, ADD COLUMN space_id TEXT", name)
        yield generation, dsn


@pytest.fixture
async def generation_pool(aio_loop: object, generation_dsn: tuple[str, str]) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    generation, dsn = generation_dsn
    if generation == FIELD_META:  # an empty database: the embedded default creates the table
        await _migrated(dsn, create_sync_changes=True, embedded_generation=FIELD_META)
    p = await connect_with_retry(dsn, 6, 10)
    try:
        yield generation, p
    finally:
        await close_pool(p)


ALL = pytest.mark.parametrize("generation_dsn", [V06, TRANSITIONAL, FIELD_META], indirect=True)


async def _agent_rows(pool: asyncpg.Pool, stamps: str) -> list[asyncpg.Record]:
    return await fetch(pool, f"SELECT data, {stamps} AS stamps, to_jsonb(c) AS whole FROM sync_changes c "
                             "WHERE client_id = 'mana-ai-runner' ORDER BY created_at, id")


@ALL
async def test_a_mission_is_folded_planned_and_written_back_in_the_tables_generation(
        generation_pool: tuple[str, asyncpg.Pool]) -> None:
    generation, pool = generation_pool
    sync = await read_sync_schema(pool)
    assert sync.generation == generation
    await insert_rows(pool, {**agent_row("a1"), "created_at": PAST},
                      {**mission("m1", agent_id="a1"), "created_at": PAST},
                      # a later device edit, stamped in the generation's column: the fold applies it
                      {**update("aiMissions", "m1", {"objective": "Neues Ziel"}, "2026-11-30T10:00:00.000Z"),
                       "created_at": PAST + timedelta(seconds=1)})
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm) as runtime:
            assert runtime.sync == sync
            stats = await runtime.snapshots.run_cycle()
    assert (stats.plans_produced, stats.plans_written_back, stats.errors) == (1, 1, [])
    assert "Neues Ziel" in llm.requests[0]["messages"][1]["content"]
    [row] = await _agent_rows(pool, sync.stamps_column)
    iteration = row["data"]["iterations"][0]
    whole = row["whole"]
    if generation == FIELD_META:  # after the overhaul: only `iterations`, and the agent origin
        assert row["data"] == {"iterations": [iteration]}
        assert row["stamps"] == {"iterations": iteration["startedAt"]}
        assert whole["origin"] == "agent" and "field_timestamps" not in whole
    else:
        assert row["data"] == {"iterations": [iteration], "updatedAt": iteration["startedAt"]}
        assert row["stamps"] == {"iterations": iteration["startedAt"], "updatedAt": iteration["startedAt"]}
        assert whole.get("origin") == ("agent" if generation == TRANSITIONAL else None)
    assert (whole["client_id"], whole["op"], whole["schema_version"]) == ("mana-ai-runner", "update", 1)
    assert whole["actor"]["principalId"] == "a1"
    [run] = await ledger(pool, "m1")
    assert run["status"] == "planned"
    # the write-back folds into the snapshot like any device row (its stamps from the same column)
    await SnapshotActor(pool, daemon_settings(snapshot_lag_ms=0), Metrics(), sync=sync).run_cycle()
    [snap] = await fetch(pool, "SELECT record FROM mana_ai.mission_snapshots WHERE mission_id = 'm1'")
    assert snap["record"]["iterations"] == [iteration] and snap["record"]["objective"] == "Neues Ziel"


async def _claims(pool: asyncpg.Pool, sync: SyncSchema, *rows: dict[str, Any]) -> list[Claim]:
    await insert_rows(pool, *[{**r, "created_at": PAST} for r in rows])
    await SnapshotActor(pool, daemon_settings(), Metrics(), sync=sync).run_cycle()  # refresh only
    due = await list_due_missions(pool, "2999-01-01T00:00:00.000Z")
    claims = await claim_runs(pool, due, instance_id="t", lease_s=60)
    return sorted(claims, key=lambda c: [r["record_id"] for r in rows].index(c.mission_id))


@ALL
async def test_the_careful_write_back_folds_newer_rows_of_the_generation(
        generation_pool: tuple[str, asyncpg.Pool]) -> None:
    generation, pool = generation_pool
    sync = await read_sync_schema(pool)
    [claim] = await _claims(pool, sync, mission("m1"))
    # the device adds an iteration after the refresh: the snapshot is behind, the careful path runs
    await insert_rows(pool, update("aiMissions", "m1", {"iterations": [{"id": "dev-1"}]}, "2026-11-30T11:00:00.000Z"))
    iteration = {"id": str(uuid4()), "startedAt": NOW_ISO, "plan": [], "summary": "", "source": "server"}
    written = await write_back(pool, claim, WriteBack(iteration, {"kind": "ai"}, NOW_ISO),
                               Provenance("planned", "m", "h", 1, 1), sync=sync)
    assert written.iterations == 2
    [row] = await _agent_rows(pool, sync.stamps_column)
    assert row["data"]["iterations"] == [{"id": "dev-1"}, iteration]
    assert ("updatedAt" in row["data"]) == (generation != FIELD_META)
    assert row["whole"].get("origin") == (None if generation == V06 else "agent")


@ALL
async def test_the_fast_path_writes_the_same_row_as_the_careful_path(generation_pool: tuple[str, asyncpg.Pool]) -> None:
    _, pool = generation_pool
    sync = await read_sync_schema(pool)
    claims = await _claims(pool, sync, mission("fast"), mission("careful"))
    iteration = {"id": str(uuid4()), "startedAt": NOW_ISO, "plan": [], "summary": "", "source": "server"}
    write, provenance = WriteBack(iteration, {"kind": "ai"}, NOW_ISO), Provenance("planned", "m", "h", 1, 1)
    [verdict] = await write_backs_fast(pool, [WriteRequest(claims[0], write, provenance, None)], sync=sync)
    assert verdict.kind == "written"  # not a failure the careful path would have covered up
    await write_back_carefully(pool, claims[1], write, provenance, sync=sync)
    fast, careful = await _agent_rows(pool, sync.stamps_column)
    assert (fast["data"], fast["stamps"]) == (careful["data"], careful["stamps"])
    drop = ("id", "record_id", "created_at")
    assert {k: v for k, v in fast["whole"].items() if k not in drop} == \
        {k: v for k, v in careful["whole"].items() if k not in drop}


@ALL
async def test_inputs_replay_from_the_generations_stamps(generation_pool: tuple[str, asyncpg.Pool]) -> None:
    _, pool = generation_pool
    sync = await read_sync_schema(pool)
    await insert_rows(pool,
                      {**update("notes", "n1", {"title": "neu", "content": "A"}, "2026-11-30T10:00:00.000Z"),
                       "app_id": "notes", "created_at": PAST},
                      # an older edit of the title arrives later: last-write-wins by stamp keeps "neu"
                      {**update("notes", "n1", {"title": "alt"}, "2026-11-30T09:00:00.000Z"),
                       "app_id": "notes", "created_at": PAST + timedelta(seconds=1)})
    records = await replay_records(pool, "u-1", [("notes", "notes", "n1")], sync=sync)
    assert records[("notes", "notes", "n1")]["title"] == "neu"


async def test_a_table_with_neither_stamps_column_stops_the_start(aio_loop: object, pg: PgServer) -> None:
    name = f"mana_ai_g{os.getpid()}_{next(_names)}"
    with pg.scratch_database(name) as dsn:
        pg.sql("CREATE TABLE sync_changes (id uuid PRIMARY KEY, app_id text, table_name text, record_id text, "
               "user_id text, op text, data jsonb, client_id text, created_at timestamptz, "
               "schema_version int, actor jsonb, origin text)", name)
        with pytest.raises(SchemaMismatch, match=r"lacks column\(s\) field_meta \(or field_timestamps\)"):
            await _migrated(dsn, create_sync_changes=True)  # an existing table is never replaced


@pytest.mark.parametrize("generation_dsn", [V06, FIELD_META], indirect=True)
async def test_a_rejected_rows_stamps_are_named_as_the_table_names_them(
        generation_pool: tuple[str, asyncpg.Pool]) -> None:
    _, pool = generation_pool
    sync = await read_sync_schema(pool)
    deep: Any = "x"
    for _ in range(70):  # deeper than MANA_AI_MAX_JSON_DEPTH (64)
        deep = [deep]
    await insert_rows(pool, {**mission("ok"), "created_at": PAST},
                      {**update("aiMissions", "poison", {"title": "t"}, NOW_ISO), "created_at": PAST})
    await fetch(pool, f"UPDATE sync_changes SET {sync.stamps_column} = $1::text::jsonb WHERE record_id = 'poison'",
                json.dumps({"title": deep}))
    await SnapshotActor(pool, daemon_settings(), Metrics(), sync=sync).run_cycle()
    [rejected] = await fetch(pool, "SELECT reason, detail FROM mana_ai.rejected_rows")
    assert rejected["reason"] == "too-deep" and rejected["detail"].startswith(f"{sync.stamps_column}: ")
    [snap] = await fetch(pool, "SELECT mission_id FROM mana_ai.mission_snapshots")
    assert snap["mission_id"] == "ok"
