"""The daemon as a non-superuser that does not own sync_changes (what production should use).

The role needs BYPASSRLS to read every user's missions (as the TypeScript service's discovery query),
CREATE on the database for schema `mana_ai`, and SELECT/INSERT on `sync_changes`. It may not
index or trigger mana-sync's table: those migrations steps warn and the daemon carries on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit, urlunsplit

import pytest

from conftest import PgServer
from fake_llm import plan_reply, running_fake_llm
from planning import CREATE_TASK, planning_runtime, written_rows
from seed import fetch, insert_rows, mission
from store.listen import set_notify_trigger
from store.migrate import load_migrations, migrate
from store.pool import close_pool, connect_with_retry
from store.sql import read_package_text

ROLE = "mana_ai_runner"


def as_role(dsn: str, role: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.split("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{role}:secret@{host}", parts.path, parts.query, parts.fragment))


@pytest.fixture
def restricted_dsn(pg: PgServer) -> Iterator[str]:
    name = f"mana_ai_restricted_{os.getpid()}"
    pg.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg.sql(f"CREATE DATABASE {name}")
    # mana-sync's table exists first, owned by the admin (mana-sync's role)
    pg.sql(read_package_text("sync_changes.sql"), name)
    pg.sql(f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN "
           f"CREATE ROLE {ROLE} LOGIN BYPASSRLS PASSWORD 'secret'; END IF; END $$")
    pg.sql(f"GRANT CREATE ON DATABASE {name} TO {ROLE}", name)
    pg.sql(f"GRANT SELECT, INSERT ON public.sync_changes TO {ROLE}", name)
    try:
        yield as_role(pg.dsn(name), ROLE)
    finally:
        pg.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_a_restricted_role_migrates_plans_and_writes_back(aio_loop: object, restricted_dsn: str) -> None:
    pool = await connect_with_retry(restricted_dsn, 6, 10)
    try:
        assert await migrate(pool, create_sync_changes=False) == [m.version for m in load_migrations()]
        indexes = await fetch(pool, "SELECT indexname FROM pg_indexes WHERE tablename = 'sync_changes'")
        assert "idx_sync_changes_mana_ai_stream" not in {r["indexname"] for r in indexes}  # warned, skipped
        assert await set_notify_trigger(pool, True) is False  # not the table's owner: polling only
        await insert_rows(pool, {**mission("m1"), "created_at": datetime.now(timezone.utc) - timedelta(minutes=1)})
        async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
            async with planning_runtime(pool, llm) as runtime:
                stats = await runtime.snapshots.run_cycle()
        assert stats.plans_written_back == 1, stats
        [row] = await written_rows(pool)
        assert row["user_id"] == "u-1"  # the insert passed sync_changes' RLS check under withUser
    finally:
        await close_pool(pool)
