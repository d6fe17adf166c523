"""Versioned, idempotent migrations of schema `mana_ai`, serialised by an advisory lock."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
from trio_asyncio import aio_as_trio

from store.errors import SchemaMismatch
from store.sql import Q, read_package_text

log = logging.getLogger(__name__)
_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The migrations shipped in `store/migrations/`, in version order."""
    found = []
    for entry in resources.files("store").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


# what the daemon reads and writes of mana-sync's table (contracts §1.1)
SYNC_CHANGES_COLUMNS = ("id", "app_id", "table_name", "record_id", "user_id", "op", "data", "field_timestamps",
                        "client_id", "created_at", "schema_version", "actor")


def sync_changes_problem(columns: set[str]) -> str | None:
    """Why `public.sync_changes` with these columns cannot be used, or None (pure)."""
    if not columns:
        return ("public.sync_changes does not exist: start mana-sync first (it creates the table), "
                "or unset SYNC_DATABASE_URL to use the embedded database")
    missing = [c for c in SYNC_CHANGES_COLUMNS if c not in columns]
    if missing:
        return (f"public.sync_changes lacks column(s) {', '.join(missing)}: upgrade mana-sync "
                "(its migration adds them), or unset SYNC_DATABASE_URL to use the embedded database")
    return None


async def _migrate(pool: asyncpg.Pool, migrations: list[Migration], create_sync_changes: bool) -> list[int]:
    async with pool.acquire() as conn, conn.transaction():
        # taken first: even CREATE SCHEMA IF NOT EXISTS races between two processes
        await conn.execute(Q["migrate_lock"])
        if create_sync_changes and not await conn.fetchval(Q["sync_changes_exists"]):
            await conn.execute(read_package_text("sync_changes.sql"))
        problem = sync_changes_problem({r["attname"] for r in await conn.fetch(Q["sync_changes_columns"])})
        if problem is not None:
            raise SchemaMismatch(problem)
        await conn.execute(Q["create_migrations_table"])
        done = {r["version"] for r in await conn.fetch(Q["applied_migrations"])}
        applied = []
        for migration in migrations:
            if migration.version in done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(Q["record_migration"], migration.version, migration.name)
            applied.append(migration.version)
        return applied


async def migrate(pool: asyncpg.Pool, *, create_sync_changes: bool) -> list[int]:
    """Apply pending migrations in one transaction; returns the versions applied now.

    `create_sync_changes` (embedded mode) creates mana-sync's table when it is missing.
    """
    applied: list[int] = await aio_as_trio(_migrate)(pool, load_migrations(), create_sync_changes)
    log.info("db.migrated", extra={"applied": ",".join(map(str, applied)) or "none"})
    return applied
