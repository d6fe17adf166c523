"""An external database the daemon cannot use stops start-up with one line, not a traceback."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import PgServer
from test_daemon_process import Daemon, daemon_env

pytestmark = pytest.mark.slow


@pytest.fixture
def bare_database(pg: PgServer) -> Iterator[str]:
    """A database mana-sync never ran on: no sync_changes."""
    with pg.scratch_database(f"mana_ai_bare_{time.monotonic_ns()}") as dsn:
        yield dsn


@pytest.mark.parametrize("command", ["serve", "tick", "migrate"])
async def test_a_database_without_sync_changes_stops_start_up_with_one_line(
        tmp_path: Path, bare_database: str, command: str) -> None:
    daemon = Daemon(tmp_path, [command], daemon_env(SYNC_DATABASE_URL=bare_database, MANA_SERVICE_KEY="startup-check-service-key"))
    await daemon.start()
    assert await daemon.wait() == 2, daemon.log()
    lines = [line for line in daemon.log().splitlines() if "INFO" not in line]
    assert lines == ["mana-ai: database error: public.sync_changes does not exist: start mana-sync first "
                     "(it creates the table), or unset SYNC_DATABASE_URL to use the embedded database"]


async def test_an_old_sync_changes_names_the_missing_columns(tmp_path: Path, pg: PgServer,
                                                             bare_database: str) -> None:
    database = urlsplit(bare_database).path[1:]
    pg.sql("CREATE TABLE sync_changes (id uuid PRIMARY KEY, app_id text, table_name text, record_id text, "
           "user_id text, op text, data jsonb, field_timestamps jsonb, client_id text, created_at timestamptz)",
           database)
    daemon = Daemon(tmp_path, ["migrate"], daemon_env(SYNC_DATABASE_URL=bare_database, MANA_SERVICE_KEY="startup-check-service-key"))
    await daemon.start()
    assert await daemon.wait() == 2, daemon.log()
    assert "public.sync_changes lacks column(s) schema_version, actor: upgrade mana-sync" in daemon.log()
    assert "Traceback" not in daemon.log()


async def test_an_unreachable_host_is_named_and_fails_within_the_connect_timeout(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the block ends
    dsn = f"postgresql://mana:hunter2@127.0.0.1:{port}/mana_sync"
    daemon = Daemon(tmp_path, ["migrate"], daemon_env(SYNC_DATABASE_URL=dsn, MANA_AI_DB_CONNECT_TIMEOUT_S="2"))
    started = time.monotonic()
    await daemon.start()
    assert await daemon.wait(timeout=20) == 1, daemon.log()
    assert time.monotonic() - started < 2 + 3  # the timeout, plus the interpreter's start
    log = daemon.log()
    assert f"cannot connect to Postgres at 127.0.0.1:{port}/mana_sync within 2s" in log
    assert "hunter2" not in log and "Traceback" not in log
