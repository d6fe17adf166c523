"""Helpers for planning tests: a runtime against the fake LLM, and reading written rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from daemon import daemon_settings
from fake_llm import FakeLlm
from observability.metrics import Metrics
from seed import change, fetch
from runtime import Runtime, open_runtime


@asynccontextmanager
async def planning_runtime(pool: asyncpg.Pool, llm: FakeLlm, metrics: Metrics | None = None,
                           **overrides: Any) -> AsyncIterator[Runtime]:
    settings = daemon_settings(**{"mana_llm_url": llm.url, "retry_base_s": 0.0, "llm_timeout_s": 5.0, **overrides})
    async with open_runtime(settings, pool, metrics or Metrics()) as runtime:
        yield runtime


async def written_rows(pool: asyncpg.Pool, mission_id: str | None = None) -> list[asyncpg.Record]:
    query = ("SELECT app_id, table_name, record_id, user_id, op, data, field_timestamps, client_id, "
             "schema_version, actor FROM sync_changes WHERE client_id = 'mana-ai-runner'")
    if mission_id is None:
        return await fetch(pool, query + " ORDER BY created_at, id")
    return await fetch(pool, query + " AND record_id = $1 ORDER BY created_at, id", mission_id)


async def ledger(pool: asyncpg.Pool, mission_id: str) -> list[asyncpg.Record]:
    return await fetch(pool, "SELECT * FROM mana_ai.mission_runs WHERE mission_id = $1 ORDER BY created_at",
                       mission_id)


def agent_row(agent_id: str, *, user: str = "u-1", name: str = "Recherche", state: str = "active",
              limit: Any = 1, policy: Any = None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"id": agent_id, "createdAt": "2026-04-15T08:00:00.000Z",
                            "updatedAt": "2026-04-15T08:00:00.000Z", "name": name, "role": "Sucht Dinge",
                            "avatar": "🔎", "state": state, "maxConcurrentMissions": limit, "userId": user}
    if policy is not None:
        data["policy"] = policy
    data.update(extra)
    return change("agents", agent_id, "insert", data, user=user)


CREATE_TASK = {"summary": "Task anlegen", "toolName": "create_task", "params": {"title": "Foo"},
               "rationale": "weil wichtig"}
