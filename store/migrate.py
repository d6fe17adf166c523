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
from store.sync_schema import FIELD_META, V06, SyncSchema, detect_sync_schema

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


# mana-sync's DDL of each generation the embedded database can be created with
_EMBEDDED_DDL = {V06: "sync_changes.sql", FIELD_META: "sync_changes_field_meta.sql"}


async def _sync_schema_on(conn: asyncpg.Connection) -> SyncSchema:
    found = detect_sync_schema({r["attname"] for r in await conn.fetch(Q["sync_changes_columns"])})
    if isinstance(found, str):
        raise SchemaMismatch(found)
    return found


async def _read_sync_schema(pool: asyncpg.Pool) -> SyncSchema:
    async with pool.acquire() as conn:
        return await _sync_schema_on(conn)


async def read_sync_schema(pool: asyncpg.Pool) -> SyncSchema:
    """The generation of `public.sync_changes`; SchemaMismatch when the daemon cannot use it."""
    schema: SyncSchema = await aio_as_trio(_read_sync_schema)(pool)
    return schema


async def _migrate(pool: asyncpg.Pool, migrations: list[Migration], create_sync_changes: str | None) -> list[int]:
    async with pool.acquire() as conn, conn.transaction():
        # taken first: even CREATE SCHEMA IF NOT EXISTS races between two processes
        await conn.execute(Q["migrate_lock"])
        if create_sync_changes is not None and not await conn.fetchval(Q["sync_changes_exists"]):
            await conn.execute(read_package_text(_EMBEDDED_DDL[create_sync_changes]))
        await _sync_schema_on(conn)  # one the daemon can use, before anything of ours is created
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


async def migrate(pool: asyncpg.Pool, *, create_sync_changes: bool, embedded_generation: str = V06) -> list[int]:
    """Apply pending migrations in one transaction; returns the versions applied now.

    `create_sync_changes` (embedded mode) creates mana-sync's table of `embedded_generation`
    (MANA_AI_SYNC_SCHEMA) when it is missing; an existing table is never changed.
    """
    if embedded_generation not in _EMBEDDED_DDL:
        raise ValueError(f"unknown sync_changes generation {embedded_generation!r}")
    applied: list[int] = await aio_as_trio(_migrate)(pool, load_migrations(),
                                                     embedded_generation if create_sync_changes else None)
    log.info("db.migrated", extra={"applied": ",".join(map(str, applied)) or "none"})
    return applied
