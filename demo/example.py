"""`mana-ai seed-example`: one due mission in the configured database, as a user's device writes it.

The mission is the demo's "Weekly review" (its objective and concept, no inputs, no key grant),
due now, for one user (`example-user` unless named), under a new id each time. The stand-in LLM
(`mana-ai stand-in-llm`) answers it with the demo's prepared plan: a task and a note.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
from trio_asyncio import aio_as_trio

from demo.seeds import MISSIONS, WEEKLY_REVIEW
from planner import iso_ms, make_user_actor
from store.sql import Q

EXAMPLE_USER = "example-user"


def example_mission(mission_id: str, now: datetime) -> dict[str, Any]:
    """The demo's weekly review without inputs or grant, due at `now`."""
    review = next(m for m in MISSIONS if m.id == WEEKLY_REVIEW)
    return {"id": mission_id, "title": review.title, "objective": review.objective,
            "conceptMarkdown": review.concept, "state": "active",
            "cadence": {"kind": "interval", "everyMinutes": 60}, "iterations": [], "inputs": [],
            "nextRunAt": iso_ms(now)}


async def _insert(pool: asyncpg.Pool, user_id: str, record: dict[str, Any]) -> None:
    async with pool.acquire() as conn:
        await conn.execute(Q["insert_example_mission"], record["id"], user_id, {**record, "userId": user_id},
                           make_user_actor(user_id, "Example user"))


async def seed_example(pool: asyncpg.Pool, user_id: str, now: datetime) -> dict[str, str]:
    """Insert the example mission for `user_id`; what was written, for the operator."""
    record = example_mission(f"example-{uuid.uuid4().hex[:8]}", now)
    await aio_as_trio(_insert)(pool, user_id, record)
    return {"userId": user_id, "missionId": record["id"], "title": record["title"], "nextRunAt": record["nextRunAt"]}
