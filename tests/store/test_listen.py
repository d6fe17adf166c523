"""The NOTIFY latency hint: migration 0004, the optional trigger, and the supervised listener."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest
import trio

from conftest import PgServer
from seed import change, fetch, insert_rows
from store.listen import APPLICATION_NAME, CHANNEL, ChangeListener, set_notify_trigger
from store.pool import close_pool, connect_with_retry

TEST_TIMEOUT_S = 15


class Changes:
    """Records `on_change` calls; `wait_for` blocks until a payload was seen `count` times."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._changed = trio.Event()

    def __call__(self, payload: str) -> None:
        self.seen.append(payload)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, payload: str, count: int = 1) -> None:
        while self.seen.count(payload) < count:
            await self._changed.wait()


def ai_row(table: str, record_id: str, **extra: str) -> dict[str, object]:
    return {**change(table, record_id, "insert", {"id": record_id}), **extra}


async def listen_pids(pool: asyncpg.Pool) -> list[int]:
    rows = await fetch(pool, "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
                             "AND datname = current_database()", APPLICATION_NAME)
    return [r["pid"] for r in rows]


async def test_migration_creates_the_notify_function(pool: asyncpg.Pool) -> None:
    rows = await fetch(pool, """
        SELECT l.lanname, p.prorettype::regtype::text AS returns, p.prosrc
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
        WHERE n.nspname = 'mana_ai' AND p.proname = 'notify_ai_change'""")
    assert [(r["lanname"], r["returns"]) for r in rows] == [("plpgsql", "trigger")]
    assert f"pg_notify('{CHANNEL}', NEW.table_name)" in rows[0]["prosrc"]
    versions = await fetch(pool, "SELECT name FROM mana_ai.schema_migrations WHERE version = 4")
    assert [r["name"] for r in versions] == ["notify_function"]
    # the trigger is managed by code, not by the migration
    assert await fetch(pool, "SELECT 1 FROM pg_trigger WHERE tgname = 'mana_ai_notify_ai_change'") == []


async def test_set_notify_trigger_installs_idempotently_and_removes(pool: asyncpg.Pool) -> None:
    query = ("SELECT pg_get_triggerdef(oid) AS def FROM pg_trigger "
             "WHERE tgrelid = 'public.sync_changes'::regclass AND tgname = 'mana_ai_notify_ai_change'")
    with trio.fail_after(TEST_TIMEOUT_S):
        assert await set_notify_trigger(pool, True) is True
        assert await set_notify_trigger(pool, True) is True
        rows = await fetch(pool, query)
        assert len(rows) == 1
        assert "AFTER INSERT ON public.sync_changes FOR EACH ROW" in rows[0]["def"]
        assert "'mana-ai-runner'" in rows[0]["def"] and "mana_ai.notify_ai_change()" in rows[0]["def"]
        assert await set_notify_trigger(pool, False) is False
        assert await fetch(pool, query) == []
        assert await set_notify_trigger(pool, False) is False


@pytest.fixture
def unprivileged_dsn(pg: PgServer, db_dsn: str) -> Iterator[str]:
    """`db_dsn` as a login role that does not own `sync_changes`."""
    role, password = f"mana_ai_nopriv_{os.getpid()}", "nopriv-pw"
    pg.sql(f"DROP ROLE IF EXISTS {role}")
    pg.sql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    parts = urlsplit(db_dsn)
    host = parts.netloc.rpartition("@")[2]
    try:
        yield urlunsplit((parts.scheme, f"{role}:{quote(password)}@{host}", parts.path, parts.query, ""))
    finally:
        database = urlsplit(db_dsn).path.lstrip("/")
        pg.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}' "
               f"AND datname = '{database}'")
        pg.sql(f"DROP ROLE IF EXISTS {role}")


async def test_set_notify_trigger_without_privilege_warns_once_and_returns_false(
        aio_loop: object, unprivileged_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        weak = await connect_with_retry(unprivileged_dsn, 1, 10)
        try:
            with caplog.at_level(logging.WARNING, logger="store.listen"):
                assert await set_notify_trigger(weak, True) is False
            assert [r.getMessage() for r in caplog.records] == ["notify.trigger_denied"]
        finally:
            await close_pool(weak)


async def test_listener_passes_on_ai_rows_from_devices_only(pool: asyncpg.Pool, db_dsn: str) -> None:
    changes = Changes()
    listener = ChangeListener(db_dsn, changes)
    with trio.fail_after(TEST_TIMEOUT_S):
        assert await set_notify_trigger(pool, True)
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.run)
            assert listener.state().connected and listener.state().connects == 1
            assert changes.seen == ["reconnected"]  # the owner re-scans after (re)connecting
            await insert_rows(pool, ai_row("notes", "n1", app_id="notes"))
            await insert_rows(pool, ai_row("aiAgents", "a1", client_id="mana-ai-runner"))
            await insert_rows(pool, ai_row("aiMissions", "m1"))
            await changes.wait_for("aiMissions")
            # NOTIFYs arrive in commit order: had the first two notified, they would be here
            assert changes.seen == ["reconnected", "aiMissions"]
            assert listener.state().notifications == 1
            nursery.cancel_scope.cancel()


async def test_listener_without_trigger_hears_nothing(pool: asyncpg.Pool, db_dsn: str) -> None:
    changes = Changes()
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(ChangeListener(db_dsn, changes).run)
            await insert_rows(pool, ai_row("aiMissions", "m1"))
            await fetch(pool, "SELECT pg_notify($1, 'marker')", CHANNEL)
            await changes.wait_for("marker")
            assert changes.seen == ["reconnected", "marker"]
            nursery.cancel_scope.cancel()


async def test_terminated_listener_reconnects_and_hears_again(pool: asyncpg.Pool, db_dsn: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    changes = Changes()
    listener = ChangeListener(db_dsn, changes, reconnect_max_s=0.5)
    with trio.fail_after(TEST_TIMEOUT_S), caplog.at_level(logging.INFO, logger="store.listen"):
        assert await set_notify_trigger(pool, True)
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.run)
            [pid] = await listen_pids(pool)
            await fetch(pool, "SELECT pg_terminate_backend($1)", pid)
            await changes.wait_for("reconnected", count=2)
            state = listener.state()
            assert state.connected and state.connects == 2 and state.last_error is not None
            assert [p for p in await listen_pids(pool) if p != pid]  # a new backend
            await insert_rows(pool, ai_row("aiMissions", "m1"))
            await changes.wait_for("aiMissions")
            nursery.cancel_scope.cancel()
    events = [r.getMessage() for r in caplog.records]
    assert events.count("notify.connected") == 2 and events.count("notify.lost") == 1


def _local_postgres_process(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip().startswith("postgres")
    except OSError:
        return False


async def test_failing_health_check_reconnects(pool: asyncpg.Pool, db_dsn: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A backend that stops answering (SIGSTOP: like a silently dead socket, no FIN, no
    termination message) is found by the health check, abandoned and replaced."""
    changes = Changes()
    listener = ChangeListener(db_dsn, changes, check_interval_s=0.05, reconnect_max_s=0.5, connect_timeout_s=1.5)
    [probe] = await fetch(pool, "SELECT pg_backend_pid() AS pid")
    if not _local_postgres_process(probe["pid"]):
        pytest.skip("the server's backends are not local processes we can stop")
    with trio.fail_after(TEST_TIMEOUT_S), caplog.at_level(logging.INFO, logger="store.listen"):
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.run)
            [pid] = await listen_pids(pool)
            while listener.state().last_check_at is None:  # the check runs and passes
                await trio.sleep(0.01)
            os.kill(pid, signal.SIGSTOP)
            try:
                await changes.wait_for("reconnected", count=2)
            finally:
                os.kill(pid, signal.SIGCONT)  # it then sees its closed socket and exits
            assert listener.state().connects == 2
            assert "notify.check_failed" in [r.getMessage() for r in caplog.records]
            await fetch(pool, "SELECT pg_notify($1, 'after')", CHANNEL)
            await changes.wait_for("after")
            nursery.cancel_scope.cancel()


async def test_first_attempt_failing_still_starts_and_keeps_retrying(pool: asyncpg.Pool, db_dsn: str) -> None:
    parts = urlsplit(db_dsn)
    missing = urlunsplit((parts.scheme, parts.netloc, "/mana_ai_no_such_db", parts.query, ""))
    changes = Changes()
    listener = ChangeListener(missing, changes, reconnect_max_s=0.1)
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.run)  # returns after the first (failed) attempt
            state = listener.state()
            assert not state.connected and state.connects == 0
            assert state.last_error is not None and "InvalidCatalogName" in state.last_error
            nursery.cancel_scope.cancel()
    assert changes.seen == []


async def test_cancelling_run_leaves_no_listen_backend(pool: asyncpg.Pool, db_dsn: str) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(ChangeListener(db_dsn, Changes()).run)
            assert len(await listen_pids(pool)) == 1
            nursery.cancel_scope.cancel()
        while await listen_pids(pool):  # the backend exits just after our close returns
            await trio.sleep(0.01)
