"""Nothing we run may outlive its transaction on the server: behind a transaction pooler the next
transaction of the same connection may run on another server connection.

Statically: every statement in store/queries.sql, the migrations, mana-sync's DDL and every SQL
string in the daemon's code is free of session state (session advisory locks, `SET` without
LOCAL, `set_config(…, false)`, temporary tables, SQL-level PREPARE, cursors WITH HOLD, LISTEN
outside the listener's own connection); no code prepares statements by name or opens cursors.
At runtime: after the daemon's work (a cycle, manual ticks, the console, the inspection JSON) on
a pool for a transaction pooler, no connection holds a prepared statement, a session setting,
an advisory lock, a LISTEN or a temporary table. tests/test_pooler_process.py runs the daemon
behind a real PgBouncer.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from trio_asyncio import aio_as_trio

from console_seed import log_in
from daemon import SERVICE_KEY, running_daemon
from fake_llm import plan_reply, running_fake_llm
from planning import CREATE_TASK, agent_row
from seed import insert_rows, mission
from store.pool import Pooler, close_pool, connect_with_retry, statement_cache_size

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("actors", "demo", "grants", "http_api", "observability", "planner", "settings", "store", "upstream")
MODULES = ("supervisor.py", "runtime.py")

# what holds state beyond the transaction it runs in (a statement is checked from its start)
_STATEMENT_START = re.compile(r"^\s*(SET(?!\s+LOCAL\b)|RESET|DISCARD|LISTEN|UNLISTEN|PREPARE|DEALLOCATE|EXECUTE\s+\w+"
                              r"\s*(\(|$)|LOAD)\b", re.IGNORECASE)
_ANYWHERE = re.compile(
    r"\bpg_(try_)?advisory_(lock|unlock)(_shared|_all)?\s*\("          # session advisory locks
    r"|\bset_config\s*\((?:[^()]|\([^()]*\))*,\s*false\s*\)"              # a session setting
    r"|\bCREATE\s+(GLOBAL\s+|LOCAL\s+)?(TEMP|TEMPORARY|UNLOGGED\s+TEMP)\b"  # temporary tables
    r"|\bWITH\s+HOLD\b"                                                   # cursors outliving the transaction
    r"|\bdblink_connect\b", re.IGNORECASE)
_LISTENER = ROOT / "store" / "listen.py"  # LISTEN on its own connection, never a pooled one


def _without_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)


def _statements(sql: str) -> Iterator[str]:
    """Statements and, inside function bodies, their statements: split at every `;` and `$$`."""
    for part in re.split(r";|\$\w*\$", _without_comments(sql)):
        if part.strip():
            yield part.strip()


def session_state(sql: str) -> list[str]:
    """The pieces of `sql` that would hold state beyond their transaction (pure)."""
    found = []
    for statement in _statements(sql):
        head = re.sub(r"^(BEGIN|DECLARE)\b\s*", "", statement, flags=re.IGNORECASE)  # plpgsql blocks
        if _STATEMENT_START.match(head):
            found.append(statement.split("\n")[0][:80])
    found += [m.group(0) for m in _ANYWHERE.finditer(_without_comments(sql))]
    return found


_SQL = re.compile(r"\s*(--[^\n]*\n\s*)*(SELECT|WITH|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|SET|RESET|DISCARD|LISTEN"
                  r"|UNLISTEN|PREPARE|DECLARE|DO|BEGIN|TRUNCATE|COPY|LOCK)\b")  # our SQL is upper case


def _python_files() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))
    for module in MODULES:
        yield ROOT / module


def _sql_strings(path: Path) -> Iterator[str]:
    """The string constants of a module that look like SQL (docstrings left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if _SQL.match(node.value):
                yield node.value


def _driver_calls(path: Path) -> list[str]:
    """asyncpg calls that keep a named statement or a portal beyond one statement."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{path.relative_to(ROOT)}:{node.lineno} .{node.func.attr}()" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("prepare", "cursor")]


@pytest.mark.parametrize("sql", [
    "SELECT pg_advisory_lock(hashtext('mana_ai.migrate'))",
    "SELECT pg_try_advisory_lock(1)",
    "SELECT pg_advisory_unlock_all()",
    "SET statement_timeout = '5s'",
    "UPDATE t SET a = 1; SET search_path TO mana_ai",
    "SET SESSION lock_timeout = 100",
    "RESET ALL",
    "SELECT set_config('app.current_user_id', $1, false)",
    "SELECT set_config('statement_timeout', lower($1), false)",
    "CREATE TEMP TABLE scratch (id int)",
    "CREATE TEMPORARY TABLE scratch AS SELECT 1",
    "LISTEN mana_ai_changes",
    "PREPARE claim AS SELECT 1",
    "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
    "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN SET work_mem = '1GB'; END $$",
])
def test_the_scan_finds_what_would_break_behind_a_pooler(sql: str) -> None:
    assert session_state(sql), sql


@pytest.mark.parametrize("sql", [
    "SELECT pg_advisory_xact_lock(hashtext('mana_ai.migrate'))",
    "SELECT set_config('app.current_user_id', $1, true)",
    "SET LOCAL statement_timeout = '5s'",
    "UPDATE mana_ai.mission_runs\nSET status = 'retry'\nWHERE true",
    "ALTER TABLE t ALTER COLUMN c SET DEFAULT 1",
    "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql SET search_path = mana_ai AS $$ BEGIN "
    "UPDATE t SET a = 1; PERFORM set_config('x.y', 'z', true); END $$",
    "-- SET in a comment is no statement\nSELECT 1",
])
def test_the_scan_lets_transaction_scoped_statements_pass(sql: str) -> None:
    assert session_state(sql) == [], sql


def test_no_query_migration_or_code_holds_session_state() -> None:
    from store.migrate import load_migrations
    from store.sql import Q

    found = {f"queries.sql {name}": session_state(sql) for name, sql in Q.items()}
    found |= {f"migration {m.version:04d}_{m.name}": session_state(m.sql) for m in load_migrations()}
    found |= {f"store/{p.name}": session_state(p.read_text(encoding="utf-8"))
              for p in sorted((ROOT / "store").glob("*.sql"))}
    for path in _python_files():
        for text in _sql_strings(path):
            found[f"{path.relative_to(ROOT)}: {text.strip()[:60]!r}"] = session_state(text)
    assert {where: what for where, what in found.items() if what} == {}
    # the scan saw the statements: queries.sql has dozens, store/listen.py its trigger's DDL
    assert len(found) > 50 and any(where.startswith("store/listen.py: 'CREATE TRIGGER") for where in found)
    assert [call for path in _python_files() for call in _driver_calls(path)] == []
    # LISTEN happens on the listener's own connection only (asyncpg's add_listener runs it)
    users = [p for p in _python_files() if "add_listener(" in p.read_text(encoding="utf-8")]
    assert users == [_LISTENER]


def test_a_transaction_pooler_turns_the_statement_cache_off() -> None:
    assert statement_cache_size("transaction") == 0 and statement_cache_size("none") > 0


_LEFTOVERS = """
SELECT (SELECT count(*) FROM pg_prepared_statements
        WHERE statement NOT LIKE '%pg_prepared_statements%') AS prepared,
       (SELECT coalesce(array_agg(name ORDER BY name), '{}') FROM pg_settings WHERE source = 'session') AS settings,
       (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory') AS advisory_locks,
       (SELECT count(*) FROM pg_listening_channels()) AS listening,
       (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()) AS temp_relations
"""


async def _leftovers(pool: asyncpg.Pool, size: int) -> list[dict[str, Any]]:
    """What each of the pool's connections holds beyond a transaction (all of them checked out at once)."""
    held = [await pool.acquire() for _ in range(size)]
    try:
        return [dict(await conn.fetchrow(_LEFTOVERS)) for conn in held]
    finally:
        for conn in held:
            await pool.release(conn)


async def _work_then_leftovers(db_dsn: str, pooler: Pooler, size: int = 4) -> list[dict[str, Any]]:
    pool = await connect_with_retry(db_dsn, size, 10, pooler=pooler)
    try:
        await insert_rows(pool, *[agent_row(f"a{i}", limit=3, maxTokensPerDay=100_000) for i in range(3)],
                          *[mission(f"m{i}", agent_id=f"a{i % 3}") for i in range(9)])
        async with running_fake_llm(plan_reply([CREATE_TASK])) as llm, \
                running_daemon(pool, mana_llm_url=llm.url, retry_base_s=0.0) as daemon:
            key = {"X-Service-Key": SERVICE_KEY}
            stats = (await daemon.client.post("/internal/tick", headers=key)).json()
            assert stats["plansWrittenBack"] == 9 and stats["errors"] == [], stats
            assert (await daemon.client.post("/internal/tick", headers=key)).status_code == 200
            assert (await log_in(daemon.client)).status_code in (302, 303)
            for path in ("/ui", "/ui/missions/u-1", "/ui/dead", "/ui/live/overview", "/internal/agents",
                         "/internal/missions/u-1", "/internal/rejected", "/health"):
                response = await daemon.client.get(path, headers=key)
                assert response.status_code == 200, (path, response.status_code)
        leftovers: list[dict[str, Any]] = await aio_as_trio(_leftovers)(pool, size)
        return leftovers
    finally:
        await close_pool(pool)


async def test_nothing_outlives_a_transaction_on_a_pool_for_a_transaction_pooler(aio_loop: None,
                                                                                db_dsn: str) -> None:
    leftovers = await _work_then_leftovers(db_dsn, "transaction")
    assert leftovers == [{"prepared": 0, "settings": [], "advisory_locks": 0, "listening": 0,
                          "temp_relations": 0}] * len(leftovers)


async def test_without_a_pooler_statements_stay_prepared(aio_loop: None, db_dsn: str) -> None:
    # the check above sees a named statement when there is one: asyncpg's cache keeps them by default
    leftovers = await _work_then_leftovers(db_dsn, "none")
    assert sum(c["prepared"] for c in leftovers) > 0
