"""Retention: delete one small batch of rows past their retention (the janitor loops over it).

Three tables grow with use and are pruned by age (docs/operations.md, "Retention"):

  mission_runs   planned or discarded slots after `runs_days`, dead slots never discarded
                 after `dead_runs_days`; never a running claim, a retry, or any mission's
                 current slot (the row that stops that slot being planned twice)
  decrypt_audit  a user's audit trail of what the server decrypted, after `audit_days`
  rejected_rows  records of skipped sync_changes rows, after `rejected_days`

A retention of 0 days keeps a table's rows forever. One batch is one statement in its own short
transaction, bounded by a statement and a lock timeout on the server; rows another session
holds are skipped, never waited for.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from trio_asyncio import aio_as_trio

from store.errors import DRIVER_ERRORS, StoreError
from store.sql import Q

__all__ = ["RETENTION_TABLES", "Retention", "prune_batch"]

RETENTION_TABLES = ("mission_runs", "decrypt_audit", "rejected_rows")


@dataclass(frozen=True)
class Retention:
    """Days each kind of row is kept; 0 keeps it forever."""

    runs_days: int = 30
    dead_runs_days: int = 180
    audit_days: int = 400
    rejected_days: int = 30

    def prunes(self, table: str) -> bool:
        """Whether anything of `table` is ever pruned."""
        if table == "mission_runs":
            return bool(self.runs_days or self.dead_runs_days)
        return bool(self._days(table))

    def _days(self, table: str) -> int:
        return {"decrypt_audit": self.audit_days, "rejected_rows": self.rejected_days}[table]

    def arguments(self, table: str, batch: int) -> tuple[int | None, ...]:
        """The parameters of `table`'s prune statement (None days: that kind is kept)."""
        if table == "mission_runs":
            return (self.runs_days or None, self.dead_runs_days or None, batch)
        return (self._days(table), batch)


async def _prune(pool: asyncpg.Pool, query: str, arguments: tuple[int | None, ...], timeout_ms: int) -> int:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(Q["prune_timeouts"], f"{timeout_ms}ms", f"{timeout_ms}ms")
        status: str = await conn.execute(query, *arguments)
    return int(status.split()[-1])  # "DELETE <n>"


async def prune_batch(pool: asyncpg.Pool, table: str, retention: Retention, *, batch: int, timeout_s: float) -> int:
    """Delete at most `batch` rows of `table` past its retention; returns how many.

    Raises `StoreError` (its cause the driver's error) when the database fails or the
    statement runs or waits for a lock longer than `timeout_s`."""
    if table not in RETENTION_TABLES:
        raise ValueError(f"no retention for {table!r}")
    timeout_ms = max(1, round(timeout_s * 1000))
    try:
        deleted: int = await aio_as_trio(_prune)(pool, Q[f"prune_{table}"], retention.arguments(table, batch),
                                                 timeout_ms)
    except DRIVER_ERRORS as exc:
        raise StoreError(f"prune {table}: {type(exc).__name__}: {exc}") from exc
    return deleted
