"""Expand now, contract one release later: a migration never removes what the previous release
still calls, because during a rolling deploy its replicas run against the migrated schema.

* the previous release's write-back (its exact SQL text and parameter shape) still writes
  the right row after every migration, in each generation of `sync_changes`;
* every statement of the previous releases (`previous_release/queries_*.sql`) still prepares
  against the migrated schema: no table, column or function it names has gone;
* a guard reads the migrations: a DROP, a RENAME or a column's type or NOT NULL changed is a
  contraction, allowed only when listed in `ALLOWED_CONTRACTIONS` with the release that made it.

Releases are named by the newest migration they ship: `previous_release/queries_0009.sql` is the
release that 0010 broke, `queries_0011.sql` the last one. When a release is cut, its
`store/queries.sql` is added there likewise.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import pytest
from trio_asyncio import aio_as_trio

from actors.snapshot import SnapshotActor
from conftest import TEMPLATE, PgServer
from daemon import daemon_settings
from observability.metrics import Metrics
from seed import fetch, insert_rows, mission
from store.due import list_due_missions
from store.migrate import load_migrations, migrate, read_sync_schema
from store.pool import close_pool, connect_with_retry
from store.runs import Claim, claim_runs
from store.sql import _parse
from store.sync_schema import FIELD_META, TRANSITIONAL, V06

HERE = Path(__file__).resolve().parent
MIGRATIONS = HERE.parents[1] / "store" / "migrations"
PREVIOUS = _parse((HERE / "previous_release" / "queries_0009.sql").read_text(encoding="utf-8"))
# the releases whose replicas may still run against this schema: the one 0010 broke, and the last
RELEASES = {release: _parse((HERE / "previous_release" / f"queries_{release}.sql").read_text(encoding="utf-8"))
            .items() for release in ("0009", "0011")}
PAST = datetime.now(timezone.utc) - timedelta(minutes=5)
NOW_ISO = "2026-12-06T12:00:00.000Z"
_names = itertools.count()


# --- the previous release's write-back --------------------------------------------------------

@pytest.fixture
def generation_dsn(pg: PgServer, request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """A database of the requested sync_changes generation (migrated unless field-meta)."""
    generation = request.param
    name = f"mana_ai_c{os.getpid()}_{next(_names)}"
    with pg.scratch_database(name, None if generation == FIELD_META else TEMPLATE) as dsn:
        if generation == TRANSITIONAL:  # a pre-overhaul table that gained the overhaul's columns
            pg.sql("ALTER TABLE sync_changes ADD COLUMN origin TEXT, ADD COLUMN space_id TEXT", name)
        yield generation, dsn


@pytest.fixture
async def generation_pool(aio_loop: object, generation_dsn: tuple[str, str]) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    generation, dsn = generation_dsn
    p = await connect_with_retry(dsn, 4, 10)
    try:
        if generation == FIELD_META:  # an empty database: created with the overhaul's table
            await migrate(p, create_sync_changes=True, embedded_generation=FIELD_META)
        yield generation, p
    finally:
        await close_pool(p)


def previous_item(claim: Claim, iteration: dict[str, Any], usage: dict[str, Any] | None) -> dict[str, Any]:
    """One item as the previous release's `store/writeback.py` `fast_item` built it."""
    return {
        "user_id": claim.user_id, "mission_id": claim.mission_id, "due_slot": claim.due_slot,
        "token": str(claim.token), "iteration": iteration,
        "actor": {"kind": "ai", "principalId": "legacy:ai-default", "displayName": "Mana",
                  "missionId": claim.mission_id},
        "now_iso": NOW_ISO, "outcome": "planned", "model": "gpt-4o-mini", "prompt_hash": "hash",
        "prompt_tokens": 11, "completion_tokens": 7, "planner_mode": "json", "planner_rounds": 1,
        "usage": usage,
    }


async def _previous_write_backs(pool: asyncpg.Pool, items: list[dict[str, Any]]) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:  # as the previous release: one statement, its own transaction
        return list(await conn.fetch(PREVIOUS["write_backs"], items))


@pytest.mark.parametrize("generation_dsn", [V06, TRANSITIONAL, FIELD_META], indirect=True)
async def test_the_previous_releases_write_back_call_still_writes_after_every_migration(
        generation_pool: tuple[str, asyncpg.Pool]) -> None:
    generation, pool = generation_pool
    sync = await read_sync_schema(pool)
    old = {"id": "it-0", "summary": "from the device"}
    await insert_rows(pool, {**mission("m1", iterations=[old]), "created_at": PAST},
                      {**mission("m2"), "created_at": PAST})
    await SnapshotActor(pool, daemon_settings(), Metrics(), sync=sync).run_cycle()  # refresh only
    due = await list_due_missions(pool, "2999-01-01T00:00:00.000Z")
    claims = {c.mission_id: c for c in await claim_runs(pool, due, instance_id="old-replica", lease_s=60)}
    iteration = {"id": str(uuid4()), "startedAt": NOW_ISO, "plan": [{"id": "x-0", "summary": "Ä ✓"}],
                 "summary": "Plan", "overallStatus": "awaiting-review", "source": "server"}
    usage = {"reservation_id": None, "agent_id": "legacy:ai-default", "iteration_id": iteration["id"],
             "prompt_tokens": 11, "completion_tokens": 7}
    stolen = Claim(claims["m2"].user_id, "m2", claims["m2"].due_slot, uuid4(), 1)  # a lease it lost
    rows = await aio_as_trio(_previous_write_backs)(
        pool, [previous_item(claims["m1"], iteration, usage), previous_item(stolen, iteration, None)])

    assert [(r["item_no"], r["verdict"], r["iteration_count"], r["error_code"]) for r in rows] == [
        (1, "written", 2, None), (2, "lease-lost", None, None)]
    [row] = await fetch(pool, f"SELECT data, {sync.stamps_column} AS stamps, to_jsonb(c) AS whole "
                              "FROM sync_changes c WHERE client_id = 'mana-ai-runner'")
    whole = row["whole"]
    if generation == FIELD_META:  # the row this release writes there (the previous one could not)
        assert row["data"] == {"iterations": [old, iteration]}
        assert row["stamps"] == {"iterations": NOW_ISO}
    else:  # exactly the previous release's row
        assert row["data"] == {"iterations": [old, iteration], "updatedAt": NOW_ISO}
        assert row["stamps"] == {"iterations": NOW_ISO, "updatedAt": NOW_ISO}
    assert whole.get("origin") == (None if generation == V06 else "agent")
    assert (whole["record_id"], whole["user_id"], whole["op"], whole["client_id"], whole["schema_version"]) == (
        "m1", "u-1", "update", "mana-ai-runner", 1)
    assert whole["actor"]["missionId"] == "m1"
    [run] = await fetch(pool, "SELECT * FROM mana_ai.mission_runs WHERE mission_id = 'm1'")
    assert (run["status"], run["outcome"], run["iteration_id"], run["prompt_tokens"], run["lease_token"]) == (
        "planned", "planned", iteration["id"], 11, None)
    [snap] = await fetch(pool, "SELECT settled_slot FROM mana_ai.mission_snapshots WHERE mission_id = 'm1'")
    assert snap["settled_slot"] == claims["m1"].due_slot
    [used] = await fetch(pool, "SELECT status, prompt_tokens, completion_tokens FROM mana_ai.token_usage")
    assert tuple(used) == ("used", 11, 7)


# --- every statement of the previous release ---------------------------------------------------

# the previous release's two folded streams (its store/streams.py fills these placeholders)
PREVIOUS_STREAMS = ({"snapshots": "mana_ai.mission_snapshots", "id_column": "mission_id"},
                    {"snapshots": "mana_ai.agent_snapshots", "id_column": "agent_id"})


def previous_statements(release: str) -> dict[str, str]:
    """Every statement of a previous release, a stream's statement once per stream."""
    statements = {}
    for name, statement in RELEASES[release]:
        statement = statement.replace("__stamps__", "field_timestamps")  # a v0.6 table
        if "{snapshots}" in statement:
            for stream in PREVIOUS_STREAMS:
                statements[f"{name}[{stream['snapshots']}]"] = statement.format(**stream)
        else:
            statements[name] = statement
    return statements


async def _unpreparable(pool: asyncpg.Pool, statements: dict[str, str]) -> dict[str, str]:
    failed = {}
    async with pool.acquire() as conn:
        for name, statement in statements.items():
            try:
                tx = conn.transaction()
                await tx.start()
                try:  # an error aborts only this one, and nothing it runs stays
                    if ";" in statement.rstrip().rstrip(";"):  # several commands, no parameters: run them
                        await conn.execute(statement)
                    else:
                        await conn.prepare(statement)
                finally:
                    await tx.rollback()
            except asyncpg.PostgresError as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"
    return failed


@pytest.mark.parametrize("release", sorted(RELEASES))
async def test_every_statement_of_the_previous_release_prepares_on_the_migrated_schema(
        pool: asyncpg.Pool, release: str) -> None:
    """Preparing parses and resolves every table, column, function and type a statement names."""
    statements = previous_statements(release)
    assert len(statements) > 50
    failed = await aio_as_trio(_unpreparable)(pool, statements)
    assert failed == {}


# --- the guard: contractions are a conscious step ------------------------------------------------

# (migration file, the contracting statement) -> the release that contracted it, and why it is safe
ALLOWED_CONTRACTIONS: dict[tuple[str, str], str] = {
    ("0010_sync_generations.sql", "DROP FUNCTION IF EXISTS mana_ai.write_backs(jsonb)"):
        "0010's release, one release too early (the release up to 0009 still calls it); "
        "0014 restores it, so a database migrated past 0014 has it again",
}

_CONTRACTION = re.compile(
    r"\bDROP\b|\bRENAME\b|\bALTER\s+COLUMN\b.*\b(TYPE|SET\s+NOT\s+NULL|SET\s+DATA\s+TYPE)\b|\bTRUNCATE\b",
    re.IGNORECASE | re.DOTALL)


def contractions_in(sql: str) -> list[str]:
    """The statements of a migration that remove or rename something, or narrow a column
    (comments ignored; statements inside function bodies are read too), whitespace-normalised."""
    text = re.sub(r"--[^\n]*", "", sql)
    found = []
    for piece in text.split(";"):
        statement = " ".join(piece.split())
        if statement and _CONTRACTION.search(statement):
            found.append(statement)
    return found


def test_the_guard_finds_contractions() -> None:
    assert contractions_in("-- dropped later\nALTER TABLE t ADD COLUMN x INT;\nCREATE INDEX i ON t (x);") == []
    assert contractions_in("ALTER TABLE mana_ai.t\n  DROP COLUMN x;") == ["ALTER TABLE mana_ai.t DROP COLUMN x"]
    assert contractions_in("ALTER TABLE t DROP x; ALTER TABLE t RENAME COLUMN a TO b;") == [
        "ALTER TABLE t DROP x", "ALTER TABLE t RENAME COLUMN a TO b"]
    assert contractions_in("ALTER TABLE t ALTER COLUMN a TYPE bigint") == ["ALTER TABLE t ALTER COLUMN a TYPE bigint"]
    assert contractions_in("alter table t alter column a set not null") == ["alter table t alter column a set not null"]
    assert contractions_in("DROP INDEX IF EXISTS mana_ai.i; drop table x; DROP VIEW v") == [
        "DROP INDEX IF EXISTS mana_ai.i", "drop table x", "DROP VIEW v"]


def test_no_migration_removes_what_the_previous_release_calls_unless_listed() -> None:
    found = {(path.name, statement) for path in sorted(MIGRATIONS.glob("*.sql"))
             for statement in contractions_in(path.read_text(encoding="utf-8"))}
    unlisted = sorted(found - set(ALLOWED_CONTRACTIONS))
    assert unlisted == [], ("a migration removes, renames or narrows something the previous release may still "
                            "use: expand now, contract one release later (docs/operations.md, Migrations), "
                            "then list it in ALLOWED_CONTRACTIONS")
    assert sorted(set(ALLOWED_CONTRACTIONS) - found) == []  # no stale entries
    assert {m.name for m in load_migrations()} >= {Path(f).stem[5:] for f, _ in found}
