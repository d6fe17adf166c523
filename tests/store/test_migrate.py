"""Migrations: ordered, idempotent, safe from two processes at once."""

from __future__ import annotations

import os
from collections.abc import Iterator

import asyncpg
import pytest
import trio

from conftest import PgServer
from seed import fetch
from store.migrate import load_migrations, migrate
from store.pool import close_pool, connect_with_retry


@pytest.fixture
def empty_dsn(pg: PgServer) -> Iterator[str]:
    name = f"mana_ai_empty_{os.getpid()}"
    pg.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg.sql(f"CREATE DATABASE {name}")
    try:
        yield pg.dsn(name)
    finally:
        pg.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_migrations_are_numbered_in_order() -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == sorted(versions) and versions[0] == 1 and len(set(versions)) == len(versions)


async def test_two_processes_migrating_at_once_apply_each_version_once(aio_loop: object, empty_dsn: str) -> None:
    pools = [await connect_with_retry(empty_dsn, 2, 10) for _ in range(2)]
    try:
        results: list[list[int]] = []

        async def run(index: int) -> None:
            results.append(await migrate(pools[index], create_sync_changes=True))

        async with trio.open_nursery() as nursery:
            for i in range(2):
                nursery.start_soon(run, i)
        all_versions = [m.version for m in load_migrations()]
        assert sorted(results, key=len) == [[], all_versions]
        assert await migrate(pools[0], create_sync_changes=True) == []
        rows = await fetch(pools[0], "SELECT version FROM mana_ai.schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == all_versions
        tables = await fetch(pools[0], "SELECT table_name FROM information_schema.tables "
                                       "WHERE table_schema IN ('mana_ai', 'public') ORDER BY table_name")
        assert {"mission_snapshots", "agent_snapshots", "decrypt_audit", "sync_changes",
                "schema_migrations", "refresh_cursors"} <= {r["table_name"] for r in tables}
    finally:
        for p in pools:
            await close_pool(p)


async def test_reference_indexes_and_policy_exist(pool: asyncpg.Pool) -> None:
    rows = await fetch(pool, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'mana_ai'")
    names = {r["indexname"] for r in rows}
    assert {"idx_mission_snapshots_due", "idx_mission_snapshots_user", "idx_decrypt_audit_mission",
            "idx_agent_snapshots_user", "idx_agent_snapshots_state"} <= names
    due = next(r["indexdef"] for r in rows if r["indexname"] == "idx_mission_snapshots_due")
    assert "WHERE ((record ->> 'state'::text) = 'active'::text)" in due
    policies = await fetch(pool, "SELECT policyname FROM pg_policies WHERE tablename = 'decrypt_audit'")
    assert [p["policyname"] for p in policies] == ["decrypt_audit_user_scope"]
