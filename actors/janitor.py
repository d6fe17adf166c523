"""The janitor: prunes rows past their retention, off the hot path (docs/operations.md, "Retention").

One task in the daemon's worker nursery. It runs a round at start and then about hourly
(±25 % jitter, so replicas started together drift apart). A round visits each table whose
retention is not 0 (`store.retention.RETENTION_TABLES`) and deletes batches of at most
`batch` rows, pausing `pause_s` between batches, until a batch comes back short or the table
has had `round_budget_s`; the rest waits for the next round. Every batch is bounded by
`timeout_s` on the server (statement and lock timeouts) and by a trio deadline.

A failure stays inside its round and table: a database error or timeout is logged once
(`retention.prune_failed`) and counted (`mana_ai_retention_errors_total{table}`); a bug is
logged with its traceback (`retention.crashed`) and counted the same way. The other tables are
still pruned, and the next round tries again. A round that deleted something logs
`retention.pruned` per table, and every deleted row counts in
`mana_ai_retention_pruned_total{table}`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import trio

from observability.metrics import Metrics
from settings import Settings
from store.errors import DATABASE_ERRORS
from store.retention import RETENTION_TABLES, Retention, prune_batch

log = logging.getLogger(__name__)

__all__ = ["Janitor", "JanitorStats", "retention_of"]

_PRUNE_ERRORS: tuple[type[Exception], ...] = (*DATABASE_ERRORS, trio.TooSlowError)
_DEADLINE_MARGIN_S = 5.0  # the trio deadline of a batch, past the server's own timeout


def retention_of(settings: Settings) -> Retention:
    return Retention(runs_days=settings.runs_retention_days, dead_runs_days=settings.dead_runs_retention_days,
                     audit_days=settings.audit_retention_days, rejected_days=settings.rejected_retention_days)


@dataclass(frozen=True)
class JanitorStats:
    rounds: int                                               # rounds finished
    pruned: dict[str, int] = field(default_factory=dict)      # rows deleted by the last round, per table
    errors: int = 0                                           # tables whose last round failed


class Janitor:
    """Owns the pruning rounds; one per daemon, run in the worker nursery."""

    def __init__(self, pool: asyncpg.Pool, retention: Retention, metrics: Metrics, *, interval_s: float = 3600.0,
                 batch: int = 1000, pause_s: float = 0.1, round_budget_s: float = 60.0, timeout_s: float = 30.0,
                 jitter: Callable[[], float] = random.random) -> None:
        self._pool = pool
        self._retention = retention
        self._metrics = metrics
        self._interval_s = interval_s
        self._batch = batch
        self._pause_s = pause_s
        self._round_budget_s = round_budget_s
        self._timeout_s = timeout_s
        self._jitter = jitter
        self._stats = JanitorStats(rounds=0)
        self._round_done = trio.Event()

    def stats(self) -> JanitorStats:
        return self._stats

    async def wait_rounds(self, rounds: int) -> None:
        """Return once `rounds` rounds have finished."""
        while self._stats.rounds < rounds:
            await self._round_done.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.prune_once()
            await trio.sleep(self._interval_s * (0.75 + 0.5 * self._jitter()))

    async def prune_once(self) -> dict[str, int]:
        """One round over every table with a retention; rows deleted per table."""
        pruned: dict[str, int] = {}
        errors = 0
        for table in RETENTION_TABLES:
            if not self._retention.prunes(table):
                continue
            pruned[table], failed = await self._prune_table(table)
            errors += failed
        self._stats = JanitorStats(self._stats.rounds + 1, pruned, errors)
        self._round_done.set()
        self._round_done = trio.Event()
        return pruned

    async def _prune_table(self, table: str) -> tuple[int, bool]:
        started = trio.current_time()
        deleted = 0
        failed = False
        try:
            while True:
                with trio.fail_after(self._timeout_s + _DEADLINE_MARGIN_S):
                    count = await prune_batch(self._pool, table, self._retention, batch=self._batch,
                                              timeout_s=self._timeout_s)
                deleted += count
                self._metrics.retention_pruned.labels(table=table).inc(count)
                if count < self._batch or trio.current_time() - started >= self._round_budget_s:
                    break
                await trio.sleep(self._pause_s)  # let the hot path's statements in between batches
        except _PRUNE_ERRORS as exc:
            failed = True
            self._metrics.retention_errors.labels(table=table).inc()
            error = "timed out" if isinstance(exc, trio.TooSlowError) else str(exc) or type(exc).__name__
            log.warning("retention.prune_failed", extra={"table": table, "error": error, "rows": deleted})
        except Exception as exc:  # noqa: BLE001 - a bug in one round must not end the daemon
            failed = True
            self._metrics.retention_errors.labels(table=table).inc()
            log.error("retention.crashed", extra={"table": table, "error": f"{type(exc).__name__}: {exc}",
                                                  "rows": deleted}, exc_info=True)
        if deleted:
            log.info("retention.pruned", extra={"table": table, "rows": deleted,
                                                "duration_s": round(trio.current_time() - started, 3)})
        return deleted, failed
