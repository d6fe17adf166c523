"""Reading a user's decrypt-audit rows, inside withUser.

The writer is `store.replay.write_decrypt_audit`; this is the reader behind
`GET /api/v1/me/ai-audit`. One unit of work (acquire, read-only transaction, `set_user`,
select), bridged once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
from trio_asyncio import aio_as_trio

from store.errors import StoreError
from store.sql import Q

__all__ = ["AuditRow", "read_audit_rows"]


@dataclass(frozen=True)
class AuditRow:
    id: int
    mission_id: str
    iteration_id: str | None
    table_name: str
    record_id: str
    status: str  # ok | failed | scope-violation
    reason: str | None
    ts: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> AuditRow:
        return cls(int(row["id"]), str(row["mission_id"]), row["iteration_id"], str(row["table_name"]),
                   str(row["record_id"]), str(row["status"]), row["reason"], row["ts"])


async def _read(pool: asyncpg.Pool, user_id: str, mission_id: str | None, limit: int) -> list[AuditRow]:
    try:
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute(Q["set_user"], user_id)
            if mission_id is None:
                rows = await conn.fetch(Q["audit_rows_all"], user_id, limit)
            else:
                rows = await conn.fetch(Q["audit_rows_for_mission"], user_id, mission_id, limit)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreError(f"read_audit_rows user={user_id}") from exc
    return [AuditRow.from_row(r) for r in rows]


async def read_audit_rows(pool: asyncpg.Pool, user_id: str, mission_id: str | None, limit: int) -> list[AuditRow]:
    """The user's audit rows (of one mission, if given), newest first, at most `limit`."""
    if not user_id:
        raise ValueError("withUser: empty userID")  # the TypeScript service's guard
    rows: list[AuditRow] = await aio_as_trio(_read)(pool, user_id, mission_id, limit)
    return rows
