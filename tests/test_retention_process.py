"""Retention in the daemon as an operator runs it: with the default settings, rows past their
retention are pruned soon after start and then hourly, and the rows that still matter stay."""

from __future__ import annotations

import signal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio

from conftest import PgServer
from test_daemon_process import Daemon, daemon_env, free_port

pytestmark = pytest.mark.slow

SEED = """
INSERT INTO mana_ai.mission_snapshots (user_id, mission_id, record, settled_slot)
VALUES ('u-1', 'kept', '{"id": "kept", "state": "active", "nextRunAt": "2025-01-01T00:00:00.000Z"}',
        '2025-01-01T00:00:00.000Z');
INSERT INTO mana_ai.mission_runs (user_id, mission_id, due_slot, status, finished_at, created_at, updated_at)
VALUES ('u-1', 'kept', '2025-01-01T00:00:00.000Z', 'planned', now() - interval '500 days',
        now() - interval '500 days', now() - interval '500 days'),
       ('u-1', 'old', '2025-01-01T00:00:00.000Z', 'planned', now() - interval '500 days',
        now() - interval '500 days', now() - interval '500 days');
INSERT INTO mana_ai.decrypt_audit (user_id, mission_id, table_name, record_id, status, ts)
VALUES ('u-1', 'old', 'notes', 'n1', 'ok', now() - interval '500 days'),
       ('u-1', 'kept', 'notes', 'n2', 'ok', now() - interval '300 days');
INSERT INTO mana_ai.rejected_rows (change_id, table_name, user_id, record_id, reason, detail, row_bytes,
                                   changed_at, rejected_at)
VALUES (gen_random_uuid(), 'aiMissions', 'u-1', 'old', 'too-deep', 'depth 65 > 64', 10,
        now() - interval '500 days', now() - interval '500 days');
"""

REMAINING = """
SELECT (SELECT string_agg(mission_id, ',' ORDER BY mission_id) FROM mana_ai.mission_runs) || ';' ||
       (SELECT string_agg(mission_id, ',' ORDER BY mission_id) FROM mana_ai.decrypt_audit) || ';' ||
       (SELECT count(*) FROM mana_ai.rejected_rows)
"""


async def test_the_daemon_prunes_what_is_past_its_retention_and_keeps_the_rest(
        tmp_path: Path, db_dsn: str, pg: PgServer) -> None:
    database = urlsplit(db_dsn).path[1:]
    pg.sql(SEED, database)
    env = daemon_env(PORT=str(free_port()), SYNC_DATABASE_URL=db_dsn, MANA_AI_HOST="127.0.0.1",
                     MANA_SERVICE_KEY="retention-test-service-key-0123456789abcdef", TICK_ENABLED="false")
    daemon = Daemon(tmp_path, [], env)
    process = await daemon.start()
    try:
        with trio.fail_after(30):
            while pg.sql(REMAINING, database) != "kept;kept;0":  # a real process: poll its effect
                assert process.returncode is None, daemon.log()
                await trio.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        assert await daemon.wait(timeout=15) == 0, daemon.log()
    log = daemon.log()
    for table, rows in (("mission_runs", 1), ("decrypt_audit", 1), ("rejected_rows", 1)):
        assert f"retention.pruned table={table} rows={rows}" in log, log
