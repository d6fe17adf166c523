"""Input records and the decrypt audit: the effects behind mission input resolution.

`replay_records` is the TypeScript service's `replayRecord` for all inputs of a mission at once:
one query, inside withUser, then the same LWW fold. `write_decrypt_audit` writes all audit rows
of one run in one transaction (the TypeScript service used one transaction per row).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from trio_asyncio import aio_as_trio

from store.fold import ChangeRow, fold_rows, is_live
from store.sql import Q
from store.sync_schema import V0_6_SCHEMA, SyncSchema

RecordKey = tuple[str, str, str]  # (app_id, table_name, record_id)


async def _replay(pool: asyncpg.Pool, user_id: str, keys: Sequence[RecordKey],
                  sync: SyncSchema) -> dict[RecordKey, dict[str, Any]]:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(Q["set_user"], user_id)
        rows = await conn.fetch(sync.sql("replay_records"), user_id, [k[0] for k in keys], [k[1] for k in keys],
                                [k[2] for k in keys])
    histories: dict[RecordKey, list[ChangeRow]] = {}
    for r in rows:
        histories.setdefault((r["app_id"], r["table_name"], r["record_id"]), []).append(
            ChangeRow(r["record_id"], r["op"], r["data"], r["field_timestamps"], r["created_at"]))
    records = {}
    for key, history in histories.items():
        state = fold_rows(key[2], history)
        if is_live(state, honour_deleted_at=True) and state.record is not None:
            records[key] = dict(state.record)  # no __fieldTimestamps, as the TypeScript service's replayRecord
    return records


async def replay_records(pool: asyncpg.Pool, user_id: str, keys: Sequence[RecordKey], *,
                         sync: SyncSchema = V0_6_SCHEMA) -> dict[RecordKey, dict[str, Any]]:
    """The current state of each record (absent: never written, deleted, or `deletedAt` set)."""
    if not keys:
        return {}
    records: dict[RecordKey, dict[str, Any]] = await aio_as_trio(_replay)(pool, user_id, list(dict.fromkeys(keys)),
                                                                          sync)
    return records


@dataclass(frozen=True)
class AuditEntry:
    table_name: str
    record_id: str
    status: str  # ok | failed | scope-violation
    reason: str | None


async def _write_audit(pool: asyncpg.Pool, user_id: str, mission_id: str, iteration_id: str | None,
                       entries: Sequence[AuditEntry]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(Q["set_user"], user_id)
        await conn.execute(Q["insert_decrypt_audit"], user_id, mission_id, iteration_id,
                           [e.table_name for e in entries], [e.record_id for e in entries],
                           [e.status for e in entries], [e.reason for e in entries])


async def write_decrypt_audit(pool: asyncpg.Pool, user_id: str, mission_id: str, iteration_id: str | None,
                              entries: Sequence[AuditEntry]) -> None:
    """All audit rows of one run, in one transaction (with the run's iteration id)."""
    if entries:
        await aio_as_trio(_write_audit)(pool, user_id, mission_id, iteration_id, list(entries))
