"""Agent snapshots as `Agent` values (the TypeScript service's `loadActiveAgents`)."""

from __future__ import annotations

import asyncpg
from trio_asyncio import aio_as_trio

from store.records import Agent
from store.sql import Q

AgentKey = tuple[str, str]  # (user_id, agent_id)


async def _agents(pool: asyncpg.Pool, user_ids: list[str]) -> dict[AgentKey, Agent]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(Q["agents_of_users"], user_ids)
    agents = {}
    for row in rows:
        record = row["record"]
        if row["tombstone"] or record.get("deletedAt"):
            continue  # deleted agents disappear; their missions run as legacy, ungated
        agents[(row["user_id"], row["agent_id"])] = Agent.from_record(row["user_id"], record)
    return agents


async def load_agents(pool: asyncpg.Pool, user_ids: list[str]) -> dict[AgentKey, Agent]:
    """Live agents of these users, by (user, agent id)."""
    if not user_ids:
        return {}
    agents: dict[AgentKey, Agent] = await aio_as_trio(_agents)(pool, sorted(set(user_ids)))
    return agents
