"""Test helpers that write `sync_changes` rows the way mana-sync stores them."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from trio_asyncio import aio_as_trio

from store.sql import Q
from store.sync_schema import detect_sync_schema

USER_ACTOR = {"kind": "user", "principalId": "legacy:user", "displayName": "Du"}


async def _insert(pool: asyncpg.Pool, rows: list[dict[str, Any]]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        # the stamps go to the column of the table's generation (field_timestamps or field_meta)
        schema = detect_sync_schema({r["attname"] for r in await conn.fetch(Q["sync_changes_columns"])})
        assert not isinstance(schema, str), schema
        for row in rows:
            await conn.execute(
                f"""INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data,
                       {schema.stamps_column}, client_id, actor, created_at)
                   VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7::text::jsonb, $8, $9::text::jsonb,
                           COALESCE($10::timestamptz, now()))""",
                row.get("app_id", "ai"), row["table_name"], row["record_id"], row["user_id"], row["op"],
                json.dumps(row.get("data")), json.dumps(row.get("field_timestamps", {})),
                row.get("client_id", "device-1"), json.dumps(row.get("actor", USER_ACTOR)),
                row.get("created_at"),
            )


async def insert_rows(pool: asyncpg.Pool, *rows: dict[str, Any]) -> None:
    """Insert rows in one transaction; `created_at` (a datetime) overrides now()."""
    await aio_as_trio(_insert)(pool, list(rows))


def change(table: str, record_id: str, op: str, data: Any, *, user: str = "u-1",
           stamps: dict[str, str] | None = None, created_at: Any = None) -> dict[str, Any]:
    return {"table_name": table, "record_id": record_id, "user_id": user, "op": op, "data": data,
            "field_timestamps": stamps or {}, "created_at": created_at}


def mission(mission_id: str, *, user: str = "u-1", next_run_at: str | None = "2026-04-15T09:00:00.000Z",
            state: str = "active", agent_id: str | None = "legacy:ai-default", **extra: Any) -> dict[str, Any]:
    """A mission insert row as the webapp writes it when a mission is created."""
    data: dict[str, Any] = {
        "id": mission_id, "createdAt": "2026-04-15T08:00:00.000Z", "updatedAt": "2026-04-15T08:00:00.000Z",
        "title": "Wochenreview", "conceptMarkdown": "# Konzept\nJeden Montag.", "objective": "Review progress",
        "inputs": [{"module": "notes", "table": "notes", "id": "n1"}],
        "cadence": {"kind": "interval", "everyMinutes": 60}, "state": state, "iterations": [],
        "userId": user,
    }
    if next_run_at is not None:
        data["nextRunAt"] = next_run_at
    if agent_id is not None:
        data["agentId"] = agent_id
    data.update(extra)
    return change("aiMissions", mission_id, "insert", data, user=user, created_at=extra.pop("created_at", None))


def update(table: str, record_id: str, fields: dict[str, Any], stamp: str, *, user: str = "u-1",
           created_at: Any = None) -> dict[str, Any]:
    """An update row: `data` = the fields, every key stamped with `stamp`."""
    return change(table, record_id, "update", fields, user=user, stamps={k: stamp for k in fields},
                  created_at=created_at)


async def _fetch(pool: asyncpg.Pool, query: str, args: tuple[Any, ...]) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch(query, *args))


async def fetch(pool: asyncpg.Pool, query: str, *args: Any) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await aio_as_trio(_fetch)(pool, query, args)
    return rows
