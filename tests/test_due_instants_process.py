"""nextRunAt in any accepted ISO-8601 form, against the daemon as its own process.

A mission's due time is an instant, whatever form the device wrote it in: a `+02:00` offset
whose text sorts after the server's clock, or a value without milliseconds. The daemon plans
each such mission once and then sits idle until its interval; it never spins.
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from conftest import PgServer
from fake_llm import running_fake_llm
from test_daemon_process import Daemon, daemon_env, free_port, wait_healthy

pytestmark = pytest.mark.slow


def _insert_mission(pg: PgServer, database: str, mission_id: str, next_run_at: str) -> None:
    data = json.dumps({"id": mission_id, "title": "T", "objective": "O", "state": "active",
                       "nextRunAt": next_run_at})
    created = (datetime.now(timezone.utc) - timedelta(minutes=10)).isoformat()
    pg.sql("INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id, created_at) "
           f"VALUES ('ai', 'aiMissions', '{mission_id}', 'u-{mission_id}', 'insert', '{data}', 'device', "
           f"'{created}')", database)


def _cycles(exposition: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(r'^mana_ai_cycles_total\{[^}]*\} (\S+)$', exposition, re.M))


def _planned(pg: PgServer, database: str) -> set[str]:
    out = pg.sql("SELECT mission_id FROM mana_ai.mission_runs WHERE status = 'planned'", database)
    return set(out.split()) if out else set()


async def test_next_run_at_with_offset_or_without_fraction_is_planned_once_without_spinning(
        tmp_path: Path, db_dsn: str, pg: PgServer) -> None:
    database = urlsplit(db_dsn).path[1:]
    now = datetime.now(timezone.utc)
    # three minutes ago, written at +02:00: its text sorts after the server's "…Z" clock
    offset_past = (now - timedelta(minutes=3)).astimezone(timezone(timedelta(hours=2)))
    _insert_mission(pg, database, "m-offset", offset_past.isoformat(timespec="milliseconds"))
    # a whole second a few seconds ahead, without milliseconds: due during the second it names
    whole = datetime.fromtimestamp(math.ceil(time.time()) + 5, timezone.utc)
    _insert_mission(pg, database, "m-whole", whole.strftime("%Y-%m-%dT%H:%M:%SZ"))
    async with running_fake_llm() as llm:
        port = free_port()
        env = daemon_env(PORT=str(port), SYNC_DATABASE_URL=db_dsn, MANA_AI_HOST="127.0.0.1",
                         MANA_LLM_URL=llm.url, TICK_INTERVAL_MS="60000", MANA_AI_GRACE_S="0.5")
        daemon = Daemon(tmp_path, [], env)
        process = await daemon.start()
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_healthy(url, daemon=daemon)
            async with httpx.AsyncClient(base_url=url) as client:
                with trio.move_on_after(20):
                    while _planned(pg, database) != {"m-offset", "m-whole"}:
                        await trio.sleep(0.1)
                planned = _planned(pg, database)
                # both planned; then the daemon has nothing to do until its interval
                settled = _cycles((await client.get("/metrics")).text)
                await trio.sleep(2)  # a window to count cycles in: nothing may happen in it
                after = _cycles((await client.get("/metrics")).text)
        finally:
            process.terminate()
            await daemon.wait()
    log = daemon.log()
    # the first cycle, the due timer at m-whole, and a cycle or two for the daemon's own write-backs
    assert settled <= 8, f"{settled} cycles to plan two missions\n{log[-3000:]}"
    assert after == settled, f"{after - settled} cycles while idle"
    assert planned == {"m-offset", "m-whole"}
    assert pg.sql("SELECT count(*) FROM sync_changes WHERE client_id = 'mana-ai-runner'", database) == "2"
