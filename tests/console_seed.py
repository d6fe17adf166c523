"""What the console tests start from: agents in every state, missions with reasons, dead slots.

`seed_console` writes `sync_changes` rows and run-ledger rows, folds them with one manual tick
(nothing is due: every open slot is dead, planned, backing off or in the future), and settles the
dead slots on their snapshots as `fail_run` does.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx

from daemon import SERVICE_KEY, RunningDaemon
from planning import agent_row
from seed import fetch, insert_rows, mission

KEY = {"X-Service-Key": SERVICE_KEY}
SLOT = "2026-04-15T09:00:00.000Z"
OLD_SLOT = "2026-04-14T09:00:00.000Z"
FUTURE = "2999-01-01T00:00:00.000Z"
HOSTILE = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">Wochenreview"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def ledger_row(pool: asyncpg.Pool, mission_id: str, status: str, *, user: str = "u-1", slot: str = SLOT,
                     **cols: Any) -> None:
    names = ["user_id", "mission_id", "due_slot", "status", *cols]
    values = [user, mission_id, slot, status, *cols.values()]
    placeholders = ", ".join(f"${i + 1}" for i in range(len(values)))
    await fetch(pool, f"INSERT INTO mana_ai.mission_runs ({', '.join(names)}) VALUES ({placeholders}) RETURNING 1",
                *values)


async def seed_console(pool: asyncpg.Pool, daemon: RunningDaemon) -> None:
    past = datetime.now(timezone.utc) - timedelta(minutes=5)
    now = datetime.now(timezone.utc)
    await insert_rows(pool, *[{**row, "created_at": past} for row in [
        agent_row("a-busy", name="Recherche", maxTokensPerDay=5000),
        agent_row("a-resting", name="Schläfer", state="paused"),
        agent_row("a-old", name="Archivar", state="archived"),
        agent_row("a-other", user="u-2", name="Zweiter"),
        mission("m-dead", agent_id="a-busy", title="Kaputte Mission"),
        mission("m-hostile", agent_id="a-busy", title=HOSTILE, next_run_at=FUTURE),
        mission("m-planned", agent_id="a-resting", title="Schon geplant"),
        mission("m-backoff", agent_id="a-busy", title="Wartet"),
        mission("m-moved", agent_id="a-busy", title="Weitergezogen", next_run_at=FUTURE),
        mission("m-paused", state="paused", title="Pausiert"),
        mission("m-u2", user="u-2", agent_id="a-other", title="Andere Nutzerin", next_run_at=FUTURE),
    ]])
    await ledger_row(pool, "m-dead", "dead", attempts=5, finished_at=now,
                     last_error=f"mana-llm 401: invalid key {SERVICE_KEY}")
    await ledger_row(pool, "m-moved", "dead", slot=OLD_SLOT, attempts=5, finished_at=past, last_error="timeout")
    await ledger_row(pool, "m-planned", "planned", attempts=1, iteration_id="it-1", finished_at=now)
    await ledger_row(pool, "m-backoff", "retry", attempts=2, next_attempt_at=now + timedelta(hours=1))
    await fetch(pool, "INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, status, prompt_tokens)"
                      " VALUES ('u-1', 'a-busy', 'm-planned', 'used', 1234) RETURNING 1")
    stats = (await daemon.client.post("/internal/tick", headers=KEY)).json()
    assert stats["dueMissionCount"] == 0 and stats["errors"] == [], stats
    await fetch(pool, "UPDATE mana_ai.mission_snapshots SET settled_slot = $1 WHERE mission_id = 'm-dead'"
                      " RETURNING 1", SLOT)


async def log_in(client: httpx.AsyncClient, key: str = SERVICE_KEY, **headers: str) -> httpx.Response:
    return await client.post("/ui/login", data={"key": key}, headers=headers)


async def run_of(pool: asyncpg.Pool, mission_id: str, slot: str = SLOT) -> dict[str, Any]:
    rows = await fetch(pool, "SELECT r.status, r.attempts, r.next_attempt_at <= now() AS due_now, r.discarded_at,"
                             " s.settled_slot FROM mana_ai.mission_runs r JOIN mana_ai.mission_snapshots s"
                             " USING (user_id, mission_id) WHERE r.mission_id = $1 AND r.due_slot = $2",
                       mission_id, slot)
    return dict(rows[0])
