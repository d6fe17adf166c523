"""The snapshot actor: folds the change log into snapshots and streams due missions out.

A cycle: refresh the agents, and the missions page by page; after each mission page, select
what is due among the missions folded so far → claim it in the run ledger → send each to its
agent actor; after the last page, once more over all missions. Cycles never overlap: one runs
every `TICK_INTERVAL_MS` (fixed rate, the first at start) and when the due timer (the next
`nextRunAt`, retry or hand-back) or a NOTIFY hint wakes it, unless the scheduler is disabled; and
whenever `request_cycle()` asks; a request while a cycle runs joins it. A cycle's `TickStats`
are complete when every mission it dispatched has reported; the next cycle does not wait for
that (a slow mission never blocks other agents), and claimed missions are not due again while
their lease lives.

A cycle that fails (database down, a bug) is retried after a capped exponential back-off with
jitter instead of at once: scheduled wake-ups (interval, due-timer, NOTIFY) wait for it, a
manual tick does not. `stop()` (shutdown) ends the schedule at once: no new cycle starts and
a running one dispatches nothing more.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol
from uuid import UUID

import asyncpg
import trio

from actors.clock import Clock, utc_now
from actors.groups import leaves, single_leaf
from actors.hand_back import hand_back_all
from actors.leases import LeaseKeeper
from actors.messages import Cycle, MissionDue, TickBatch, TickStats
from observability.metrics import Metrics
from observability.redact import Redactor
from planner.iteration import iso_ms
from settings import Settings
from store.agents import AgentKey, load_agents
from store.bounds import RowBounds
from store.due import DueMission, list_due_missions, next_wake
from store.errors import DATABASE_ERRORS, StoreError
from store.inspect import ledger_gauges
from store.refresh import PagedRefresh, Position, RefreshStats, refresh_stream
from store.records import Agent
from store.runs import Claim, claim_runs
from store.streams import AGENTS, MISSIONS
from store.sync_schema import V0_6_SCHEMA, SyncSchema
from store.usage import prune_usage

log = logging.getLogger(__name__)

_PRUNE_EVERY_S = 3600.0
_GAUGE_READ_TIMEOUT_S = 10.0  # a ledger-gauge read outside a cycle (after settlement, an operator's action)
_FAILURE_BACKOFF_BASE_S = 0.5
_FAILURE_BACKOFF_MAX_S = 30.0
#: The due timer fires no sooner than this after the previous cycle ended, whatever the data or the
#: clock say is due (at most a few due-timer cycles a second); each time it holds one back is counted.
DUE_TIMER_FLOOR_S = 0.25

# Failures a cycle reports in `errors` and survives: the database or its connection.
_CYCLE_ERRORS: tuple[type[Exception], ...] = (*DATABASE_ERRORS, trio.TooSlowError)

# The mission stream is refreshed in pages of 32, 128, 512, 2048 and then 5,000 rows, each
# committed on its own, and what is due goes out after each: the first missions of a busy
# cycle start after a small page instead of after the whole refresh.
_FIRST_PAGE_ROWS = 32
_PAGE_GROWTH = 4


@dataclass
class _Passes:
    """One cycle's dispatch passes so far: the limit counts over all of them, and a slot one pass
    selected is never taken again by a later one (the claim already keeps it from being due)."""

    limit: int
    selected: int = 0
    truncated: bool = False  # a pass found as many due missions as it could take: more may be due
    seen: set[tuple[str, str, str | None]] = field(default_factory=set)
    agents: dict[AgentKey, Agent] = field(default_factory=dict)  # loaded by any pass: kept alive

    @property
    def remaining(self) -> int:
        return self.limit - self.selected

    def take(self, due: list[DueMission], limit: int) -> list[DueMission]:
        if len(due) >= limit:
            self.truncated = True
        fresh = []
        for item in due:
            slot = (item.mission.user_id, item.mission.id, item.mission.next_run_at)
            if slot not in self.seen:
                self.seen.add(slot)
                fresh.append(item)
        self.selected += len(fresh)
        return fresh


class Dispatcher(Protocol):
    async def deliver(self, due: MissionDue) -> None: ...
    def retire(self, live_agents: list[tuple[str, str]]) -> int: ...


@dataclass(frozen=True)
class SnapshotActorState:
    alive: bool
    cycles_completed: int
    last_cycle_completed_at: float | None  # unix time
    running: bool
    consecutive_failures: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class FinishedCycle:
    """One completed cycle, as the console lists it (`SnapshotActor.recent_cycles`)."""

    reason: str
    finished_at: float  # unix time
    duration_s: float
    stats: TickStats  # a copy, taken when the cycle completed


class SnapshotActor:
    """Owns the cycle schedule; one per daemon."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, metrics: Metrics,
                 dispatcher: Dispatcher | None = None, clock: Clock = utc_now,
                 jitter: Callable[[], float] = random.random, leases: LeaseKeeper | None = None,
                 sync: SyncSchema = V0_6_SCHEMA) -> None:
        self._pool = pool
        self._sync = sync  # the sync_changes generation found at start
        self._settings = settings
        self._metrics = metrics
        self._dispatcher = dispatcher  # None: count due missions only, claim nothing
        self._leases = leases  # required with a dispatcher: renews each claim until it is settled
        self._clock = clock
        self._wake = trio.Event()
        self._pending: Cycle | None = None
        self._running: Cycle | None = None
        self._alive = False
        self._cycles_completed = 0
        self._last_completed_at: float | None = None
        self._last_pruned: float | None = None
        self._hinted = False
        self._due_at = math.inf  # trio time when the next mission becomes due
        self._sleep: trio.CancelScope | None = None  # the schedule's wait, while it waits
        self._again_at = math.inf  # earliest `due_again` since the last wake-up query began
        self._cycle_ended_at = -math.inf  # trio time when the last cycle finished dispatching
        self._jitter = jitter
        self._redact = Redactor(settings.secrets())
        self._failures = 0  # cycles failed in a row
        self._last_error: str | None = None
        self._retry_at = -math.inf  # trio time before which no scheduled cycle starts (back-off)
        self._stopping = False
        self._recent: deque[FinishedCycle] = deque(maxlen=20)  # the console's ring, newest first
        self._ledger_read = trio.Lock()  # gauge reads one at a time: the last value set is the newest
        # True while no LLM work may be dispatched (the LLM circuit is open; set by the runtime):
        # cycles then claim nothing and the due timer waits for `due_again` from the circuit
        self.dispatch_held: Callable[[], bool] = _not_held

    # -- what others may call -------------------------------------------------------------

    def request_cycle(self) -> Cycle:
        """The cycle that will answer a request made now (the running one, or the next)."""
        if self._running is not None:
            return self._running
        if self._stopping:
            cycle = Cycle("manual")
            cycle.finish(self._refused())
            return cycle
        if self._pending is None:
            self._pending = Cycle("manual")
            self._wake.set()
        return self._pending

    def hint(self, reason: str) -> None:
        """Something changed (NOTIFY, reconnect): run a cycle soon. Ignored without a scheduler."""
        if self._settings.tick_enabled:
            self._hinted = True
            self._wake.set()
            log.debug("cycle.hinted", extra={"reason": reason})

    def due_again(self, delay_s: float) -> None:
        """A slot was handed back, retried or parked: it is due again in `delay_s`. The due timer,
        computed at the end of the last cycle without it, fires then if that is earlier."""
        at = trio.current_time() + max(0.0, delay_s) + 0.01  # after the instant, as in start_cycle
        self._again_at = min(self._again_at, at)
        if at < self._due_at:
            self._due_at = at
            if self._sleep is not None and not self._failures and self._settings.tick_enabled:
                # a back-off is not cut short, and the timer's floor holds for hand-backs too
                self._sleep.deadline = min(self._sleep.deadline, max(at, self._cycle_ended_at + DUE_TIMER_FLOOR_S))

    async def observe_ledger(self) -> None:
        """Read the run-ledger gauges now: after an operator's retry or discard (and once a
        cycle's missions have settled). A database that fails or does not answer in time leaves
        the last values; the next read sets them."""
        try:
            with trio.fail_after(_GAUGE_READ_TIMEOUT_S):
                await self._observe_ledger()
        except _CYCLE_ERRORS as exc:
            log.debug("ledger.gauges_unread", extra={"error": self._redact(f"{type(exc).__name__}: {exc}")})

    def state(self) -> SnapshotActorState:
        return SnapshotActorState(self._alive, self._cycles_completed, self._last_completed_at,
                                  self._running is not None, self._failures, self._last_error)

    def recent_cycles(self) -> tuple[FinishedCycle, ...]:
        """The last completed cycles, newest first (at most 20)."""
        return tuple(self._recent)

    def stop(self) -> None:
        """Shutdown: start no cycle, dispatch nothing more; a waiting tick request gets an answer."""
        self._stopping = True
        if self._pending is not None:
            self._pending.finish(self._refused())
            self._pending = None
        self._wake.set()

    def _refused(self) -> TickStats:
        return TickStats(scanned_at=iso_ms(self._clock()), errors=["the daemon is shutting down"])

    # -- the actor ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._alive = True
        try:
            async with trio.open_nursery() as finishers:  # waits for dispatched missions' outcomes
                task_status.started()
                scheduled = self._settings.tick_enabled
                interval = self._settings.tick_interval_s
                next_at = trio.current_time()  # the TypeScript service runs its first tick at start
                while not self._stopping:
                    if self._pending is None and (not self._hinted or trio.current_time() < self._retry_at):
                        # after a failure the schedule is the back-off: the due state is unknown
                        wake_at = ((self._retry_at if self._failures else min(next_at, self._due_timer_at()))
                                   if scheduled else math.inf)
                        with trio.move_on_at(wake_at) as self._sleep:
                            await self._wake.wait()
                    self._wake = trio.Event()
                    if self._stopping:
                        break
                    if self._pending is None and trio.current_time() < self._retry_at:
                        continue  # a hint during the back-off: it is served when the back-off ends
                    reason = self._wake_reason(next_at)
                    if reason == "due-timer" and self._due_at < self._cycle_ended_at + DUE_TIMER_FLOOR_S:
                        self._metrics.due_timer_floor_hits.inc()
                    self._hinted = False
                    cycle, self._pending = (self._pending or Cycle(reason)), None
                    self._metrics.cycles.labels(reason=reason).inc()
                    self._running = cycle
                    try:
                        batch, started = await self.start_cycle()
                    finally:
                        self._running = None
                    finishers.start_soon(self._finish, cycle, batch, started)
                    if batch.truncated:
                        # more is due than one cycle dispatches: go on once these have finished,
                        # so at most `dispatch_limit` missions are in memory at a time
                        with trio.move_on_after(self._settings.cycle_timeout_s):
                            await batch.wait()
                        self._hinted = scheduled
                    now = trio.current_time()
                    while next_at <= now:  # fixed rate; missed slots are skipped, not queued
                        next_at += interval
        finally:
            self._alive = False

    async def run_cycle(self) -> TickStats:
        """One whole cycle, waiting for every dispatched mission (the `tick` command, tests)."""
        cycle = Cycle("manual")
        batch, started = await self.start_cycle()
        await self._finish(cycle, batch, started)
        return await cycle.wait()

    async def start_cycle(self) -> tuple[TickBatch, float]:
        """Refresh, select, claim and dispatch; returns the sealed batch. Never raises for DB trouble."""
        started = time.perf_counter()
        scanned_at = iso_ms(self._clock())
        batch = TickBatch(TickStats(scanned_at=scanned_at))
        self._metrics.ticks.inc()
        failed = False
        try:
            try:
                with trio.fail_after(self._settings.cycle_timeout_s):
                    passes = _Passes(self._settings.dispatch_limit)
                    await self._refresh_and_dispatch(scanned_at, batch, passes)
                    batch.truncated = passes.truncated
                    self._metrics.due_missions.set(passes.selected)
                    if self._dispatcher is not None:
                        self._dispatcher.retire(list(passes.agents))
                    with self._metrics.stage("housekeeping"):
                        await self._housekeeping()
                        await self._observe_ledger()
                        self._again_at = math.inf
                        wake = await next_wake(self._pool, self._clock())
                    # a little after the instant, so the due query's `<=` sees it
                    self._due_at = math.inf if wake.seconds is None else trio.current_time() + wake.seconds + 0.01
                    self._due_at = min(self._due_at, self._again_at)  # the query may have missed those
                    if self.dispatch_held():
                        self._due_at = math.inf  # told by `due_again` when dispatch resumes
            except* _CYCLE_ERRORS as group:
                failed = True
                for exc in leaves(group):
                    self._fail(batch.stats, _describe(exc, self._settings.cycle_timeout_s), "cycle.scan_error")
        except Exception as exc:  # noqa: BLE001 - the cycle boundary: a bug must not end the daemon
            failed = True
            self._fail(batch.stats, _describe_crash(exc), "cycle.crashed", exc_info=True)
        self._after_cycle(failed, batch.stats)
        self._cycle_ended_at = trio.current_time()
        batch.seal()
        return batch, started

    def _after_cycle(self, failed: bool, stats: TickStats) -> None:
        """Count failures in a row; after one, scheduled cycles wait for a growing back-off."""
        if not failed:
            self._failures, self._last_error, self._retry_at = 0, None, -math.inf
            self._metrics.cycle_failures_in_a_row.set(0)
            return
        self._failures += 1
        self._last_error = stats.errors[-1] if stats.errors else "cycle failed"
        self._metrics.cycle_failures_in_a_row.set(self._failures)
        delay = min(_FAILURE_BACKOFF_MAX_S, _FAILURE_BACKOFF_BASE_S * 2.0 ** (self._failures - 1))
        delay *= 0.5 + 0.5 * self._jitter()
        self._retry_at = trio.current_time() + delay
        log.warning("cycle.backing_off", extra={"failures_in_a_row": self._failures,
                                                "retry_in_s": round(delay, 3)})

    def _due_timer_at(self) -> float:
        """When the due timer fires: when the next mission is due, but never sooner than
        `DUE_TIMER_FLOOR_S` after the last cycle ended."""
        return max(self._due_at, self._cycle_ended_at + DUE_TIMER_FLOOR_S)

    def _wake_reason(self, next_at: float) -> str:
        if self._pending is not None:
            return "manual"
        if self._hinted:
            return "notify"
        now = trio.current_time()
        return "due-timer" if self._due_at <= now < next_at else "interval"

    async def _finish(self, cycle: Cycle, batch: TickBatch, started: float) -> None:
        with trio.move_on_after(self._settings.cycle_timeout_s):
            await batch.wait()
        stats = batch.stats
        if not batch.done:
            stats.errors.append(f"cycle timed out after {self._settings.cycle_timeout_s:g}s "
                                "waiting for dispatched missions")
        if stats.due_mission_count:
            # the gauges read at dispatch show these slots running: read them again now that
            # they have settled (planned, backing off or dead)
            await self.observe_ledger()
        duration = time.perf_counter() - started
        self._metrics.tick_duration.observe(duration)
        self._cycles_completed += 1
        self._last_completed_at = time.time()
        self._metrics.last_cycle_completed.set(self._last_completed_at)
        self._recent.appendleft(FinishedCycle(cycle.reason, self._last_completed_at, duration,
                                              replace(stats, errors=list(stats.errors))))
        idle = stats.due_mission_count == 0 and not stats.errors  # not one INFO line a minute
        log.log(logging.DEBUG if idle else logging.INFO, "cycle.completed", extra={"due": stats.due_mission_count, "planned": stats.plans_written_back,
                                           "parse_failures": stats.parse_failures, "errors": len(stats.errors),
                                           "duration_ms": round(duration * 1000, 1)})
        cycle.finish(stats)

    def _fail(self, stats: TickStats, message: str, event: str, exc_info: bool = False) -> None:
        message = self._redact(message)
        stats.errors.append(message)
        self._metrics.cycle_errors.inc()
        log.error(event, extra={"error": message}, exc_info=exc_info)

    async def _refresh_and_dispatch(self, scanned_at: str, batch: TickBatch, passes: _Passes) -> None:
        """Refresh agents (in one go) and missions (page by page); between mission pages, dispatch
        what is due among the missions folded so far; after the last page, what is due at all.

        The agents' refresh runs alongside the first mission page, and no pass starts before it
        is done: a mission never goes out with an agent snapshot older than this cycle's."""
        lag_s = self._settings.snapshot_lag_s
        bounds = RowBounds(self._settings.max_json_depth, self._settings.max_string_bytes,
                           self._settings.max_id_chars, self._settings.max_row_bytes)
        missions = PagedRefresh(self._pool, MISSIONS, lag_s=lag_s, bounds=bounds, first_page=_FIRST_PAGE_ROWS,
                                growth=_PAGE_GROWTH, sync=self._sync)
        agents: list[RefreshStats] = []
        agents_current = trio.Event()

        async def refresh_agents() -> None:
            with self._metrics.stage("refresh"):
                agents.append(await refresh_stream(self._pool, AGENTS, lag_s=lag_s, bounds=bounds, sync=self._sync))
            agents_current.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(refresh_agents)
                while not missions.done:
                    with self._metrics.stage("refresh"):
                        await missions.next_page()
                    if not missions.done and self._dispatcher is not None and not passes.truncated:
                        await agents_current.wait()
                        await self._dispatch_pass(scanned_at, batch, passes, folded_until=missions.read_until)
        finally:
            # committed pages stay committed when a later one fails: report their malformed and
            # rejected rows now, for they are never read again
            self._record_refresh(missions.stats, agents[0] if agents else None)
        await self._dispatch_pass(scanned_at, batch, passes, folded_until=None)

    async def _dispatch_pass(self, scanned_at: str, batch: TickBatch, passes: _Passes, *,
                             folded_until: Position | None) -> None:
        """Select what is due (among missions without unfolded rows, with `folded_until`), claim
        it and send it to the agent actors; the cycle's limit counts over all its passes."""
        if passes.truncated or self.dispatch_held():
            return  # held: what is due stays unclaimed (no attempt used) until the circuit closes
        limit = passes.remaining
        with self._metrics.stage("select"):
            due = await list_due_missions(self._pool, scanned_at, limit, folded_until=folded_until)
        due = passes.take(due, limit)
        if self._stopping:
            due = []  # shutdown began while we scanned: claim nothing
        await self._dispatch(due, batch, passes)

    async def _dispatch(self, due: list[DueMission], batch: TickBatch, passes: _Passes) -> None:
        if self._dispatcher is None:
            batch.stats.due_mission_count += len(due)
            return
        assert self._leases is not None, "a dispatching SnapshotActor needs a LeaseKeeper"
        claimed_at = trio.current_time()
        claims: list[Claim] = []
        agents: dict[AgentKey, Agent] = {}
        load_failed: list[Exception] = []
        delivered: set[UUID] = set()

        async def claim() -> None:
            claims.extend(await claim_runs(self._pool, due, instance_id=self._settings.instance_id,
                                           lease_s=self._settings.lease_s))

        async def load() -> None:  # alongside the claim: the agents of every user with a due mission
            try:
                agents.update(await load_agents(self._pool, sorted({d.mission.user_id for d in due})))
            except Exception as exc:  # noqa: BLE001 - raised below, once the claim has answered
                load_failed.append(exc)

        try:
            with self._metrics.stage("claim"):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(claim)
                    nursery.start_soon(load)
            if load_failed:
                raise load_failed[0]
            by_key = {(d.mission.user_id, d.mission.id): d for d in due}
            passes.agents.update(agents)
            with self._metrics.stage("dispatch"):
                await self._deliver(claims, by_key, agents, batch, claimed_at, delivered)
        except BaseException:
            # the cycle fails after claiming: what it did not hand over goes back at once
            # instead of waiting a whole lease (a claim whose statement never answered is unknown
            # here, and left to its lease)
            await self._release_undelivered([c for c in claims if c.token not in delivered])
            raise

    async def _release_undelivered(self, claims: list[Claim]) -> None:
        if not claims:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            if await hand_back_all(self._pool, self._metrics, claims, "cycle-failed"):
                log.warning("cycle.claims_handed_back", extra={"claims": len(claims)})

    async def _deliver(self, claims: list[Claim], by_key: dict[tuple[str, str], DueMission],
                       agents: dict[tuple[str, str], Agent], batch: TickBatch, claimed_at: float,
                       delivered: set[UUID]) -> None:
        assert self._dispatcher is not None and self._leases is not None
        for claim in claims:
            item = by_key[(claim.user_id, claim.mission_id)]
            agent_id = item.mission.agent_id
            agent = agents.get((claim.user_id, agent_id)) if agent_id else None
            batch.expect()
            # held from hand-over until settled (the lease counted from the claim); a claim never
            # handed over (load_agents failed, the cycle timed out) is not held: `_dispatch`
            # hands it back
            self._leases.hold([claim], claimed_at=claimed_at)
            delivered.add(claim.token)  # from here on the dispatcher settles it, whatever happens
            await self._dispatcher.deliver(MissionDue(item.mission, agent, claim, item.snapshot_cursor, batch))

    async def _housekeeping(self) -> None:
        """Prune token usage past its retention, at most once an hour (and at start)."""
        now = trio.current_time()
        if self._last_pruned is not None and now - self._last_pruned < _PRUNE_EVERY_S:
            return
        self._last_pruned = now
        deleted = await prune_usage(self._pool, retention_h=self._settings.usage_retention_h)
        if deleted:
            log.info("usage.pruned", extra={"rows": deleted, "retention_h": self._settings.usage_retention_h})

    async def _observe_ledger(self) -> None:
        async with self._ledger_read:
            gauges = await ledger_gauges(self._pool)
            self._metrics.ledger_slots.labels(status="running").set(gauges.running)
            self._metrics.ledger_slots.labels(status="backing-off").set(gauges.backing_off)
            self._metrics.ledger_slots.labels(status="dead").set(gauges.dead)

    def _record_refresh(self, missions: RefreshStats, agents: RefreshStats | None) -> None:
        for stream_stats in (missions, agents):
            if stream_stats is not None:
                self._record(stream_stats)
        self._metrics.snapshots_new.inc(missions.snapshots_new)
        self._metrics.snapshots_updated.inc(missions.snapshots_updated)
        self._metrics.snapshot_rows_applied.inc(missions.rows_read)
        if missions.rows_read:
            log.info("snapshots.refreshed", extra={"rows": missions.rows_read, "new": missions.snapshots_new,
                                                   "updated": missions.snapshots_updated})

    def _record(self, stats: RefreshStats) -> None:
        self._metrics.refresh_rows_read.labels(table=stats.table_name).inc(stats.rows_read)
        for problem in stats.problems:
            self._metrics.sync_rows_rejected.labels(table=problem.table_name, kind=problem.kind).inc()
            log.warning("sync_row.malformed", extra={"user": problem.user_id, "table": problem.table_name,
                                                     "record": problem.record_id, "kind": problem.kind,
                                                     "detail": problem.detail})
        for rejection in stats.rejected:  # skipped whole, recorded in mana_ai.rejected_rows
            self._metrics.rows_rejected.labels(reason=rejection.reason).inc()
            log.warning("sync_row.rejected", extra=rejection.log_fields())


def _describe_crash(exc: Exception) -> str:
    """`Type: message` of the exception, or of each leaf of a (nested) group, not the group's summary."""
    leaf = single_leaf(exc)
    found = leaves(leaf) if isinstance(leaf, BaseExceptionGroup) else [leaf]
    return "; ".join(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__ for e in found)


def _describe(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, trio.TooSlowError):
        return f"cycle timed out after {timeout_s:g}s"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, StoreError) else f"{type(exc).__name__}: {text}"


def _not_held() -> bool:
    return False
