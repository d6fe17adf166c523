"""Dead slots (and slots in other states) written straight into the snapshot and ledger tables,
thousands at a time: the bulk-recovery tests start from these."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from seed import fetch

SLOT = "2026-04-15T09:00:00.000Z"


async def seed(pool: asyncpg.Pool, rows: Sequence[tuple[str, str, str | None, str]], *, slot: str = SLOT) -> None:
    """(user, mission, agent, ledger status) → a mission snapshot due at `slot` and its ledger row;
    a dead slot is settled on the snapshot as fail_run settles it."""
    await fetch(pool, """
        WITH x AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS x(u, m, a, st)),
        snaps AS (
          INSERT INTO mana_ai.mission_snapshots (user_id, mission_id, record, settled_slot)
          SELECT u, m, jsonb_build_object('id', m, 'state', 'active', 'nextRunAt', $5::text, 'agentId', a),
                 CASE WHEN st = 'dead' THEN $5::text END FROM x)
        INSERT INTO mana_ai.mission_runs (user_id, mission_id, due_slot, status, attempts, outcome, last_error,
                                          finished_at, lease_owner, lease_token, lease_expires_at, next_attempt_at)
        SELECT u, m, $5, st, 5, 'error', 'mana-llm 503', CASE WHEN st = 'dead' THEN now() END,
               CASE WHEN st = 'running' THEN 'other' END, CASE WHEN st = 'running' THEN gen_random_uuid() END,
               CASE WHEN st = 'running' THEN now() + interval '1 hour' END,
               CASE WHEN st = 'retry' THEN now() + interval '1 hour' END
        FROM x RETURNING 1""",
                [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], slot)


async def states(pool: asyncpg.Pool) -> dict[tuple[str, str], tuple[Any, ...]]:
    rows = await fetch(pool, "SELECT r.user_id, r.mission_id, r.status, r.attempts, r.discarded_at IS NOT NULL AS d,"
                             " s.settled_slot IS NULL AS reopened FROM mana_ai.mission_runs r"
                             " JOIN mana_ai.mission_snapshots s USING (user_id, mission_id)")
    return {(r["user_id"], r["mission_id"]): (r["status"], r["attempts"], r["d"], r["reopened"]) for r in rows}


DEAD = ("dead", 5, False, False)
RETRIED = ("retry", 0, False, True)
DISCARDED = ("dead", 5, True, False)


def mixed() -> list[tuple[str, str, str | None, str]]:
    return [("u-a", "m1", "a1", "dead"), ("u-a", "m2", "a1", "dead"), ("u-a", "m3", "a2", "dead"),
            ("u-a", "m4", None, "dead"), ("u-a", "m5", "a1", "running"), ("u-a", "m6", "a1", "retry"),
            ("u-a", "m7", "a1", "planned"), ("u-b", "m1", "a1", "dead"), ("u-b", "m2", "a9", "dead")]
