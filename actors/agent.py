"""AgentActor: one per (user, agent); its bounded inbox holds missions waiting for a slot.

It gates each mission (archived, paused) in the TypeScript service's order, then runs at most
`maxConcurrentMissions` of the agent's missions at once; the rest wait in the inbox and run
as soon as a slot frees, in the same cycle. A full inbox is the sender's visible decision
(`skipped-concurrency`), see `AgentRegistry.deliver`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from uuid import UUID

import trio

from actors.gating import concurrency_limit, gate
from actors.messages import ERROR, SKIPPED_CONCURRENCY, SKIPPED_SHUTDOWN, MissionDue, MissionOutcome
from store.records import Agent

log = logging.getLogger(__name__)

ActorKey = tuple[str, str | None]  # (user_id, agent_id); agent None = the user's legacy actor
Runner = Callable[[MissionDue], Awaitable[MissionOutcome]]
Skipper = Callable[[MissionDue, str], Awaitable[None]]


@dataclass(frozen=True)
class InFlight:
    mission_id: str
    started_at: float  # trio clock


@dataclass(frozen=True)
class RecentOutcome:
    mission_id: str
    kind: str
    error: str | None
    at: float  # unix time


@dataclass
class ActorBook:
    """What the registry keeps of one actor across restarts: queued missions, recent outcomes."""

    queued: dict[UUID, str] = field(default_factory=dict)  # claim token → mission id, not started yet
    recent: deque[RecentOutcome] = field(default_factory=lambda: deque(maxlen=20))

    def note(self, due: MissionDue, outcome: MissionOutcome) -> None:
        self.queued.pop(due.claim.token, None)
        self.recent.appendleft(RecentOutcome(outcome.mission_id, outcome.kind, outcome.error, time.time()))


@dataclass(frozen=True)
class AgentStats:
    key: ActorKey
    agent: Agent | None
    limit: int
    in_flight: tuple[InFlight, ...]
    queued: int
    waiting: tuple[str, ...]  # mission ids delivered and not started (mailbox or waiting for a slot)
    recent: tuple[RecentOutcome, ...]


class AgentActor:
    """Owns one agent's slots; reachable only through its inbox."""

    def __init__(self, key: ActorKey, inbox: trio.MemoryReceiveChannel[MissionDue], run_mission: Runner,
                 skip: Skipper, book: ActorBook, *, legacy_limit: int) -> None:
        self.key = key
        self._book = book
        self._inbox = inbox
        self._run_mission = run_mission
        self._skip = skip
        self._legacy_limit = legacy_limit
        self._agent: Agent | None = None
        self._limit = concurrency_limit(None, legacy_limit) if key[1] is None else 1
        self._slots = trio.CapacityLimiter(max(1, self._limit))
        self._in_flight: dict[object, InFlight] = {}
        self.stopping = False  # set at shutdown: queued missions are handed back, not started
        self._waiting: trio.CancelScope | None = None

    def stats(self) -> AgentStats:
        return AgentStats(self.key, self._agent, self._limit, tuple(self._in_flight.values()),
                          self._inbox.statistics().current_buffer_used, tuple(self._book.queued.values()),
                          tuple(self._book.recent))

    @property
    def idle(self) -> bool:
        return not self._in_flight and self._inbox.statistics().current_buffer_used == 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as missions:
            task_status.started()
            async for due in self._inbox:  # ends when the registry closes the mailbox
                if due.agent is not None:
                    self._update_agent(due.agent)
                if self.stopping:
                    await self._skip(due, SKIPPED_SHUTDOWN)
                    continue
                decision = gate(due.agent)
                if decision is None and self._limit == 0:
                    decision = SKIPPED_CONCURRENCY  # maxConcurrentMissions 0 blocks all
                if decision is not None:
                    await self._skip(due, decision)
                    continue
                acquired = await self._wait_for_slot(due)  # meanwhile the inbox holds the rest
                if not acquired or self.stopping:
                    if acquired:
                        self._slots.release_on_behalf_of(due.claim.token)
                    await self._skip(due, SKIPPED_SHUTDOWN)
                    continue
                self._book.queued.pop(due.claim.token, None)
                self._in_flight[due.claim.token] = InFlight(due.mission.id, trio.current_time())
                missions.start_soon(self._run, due)

    def stop(self) -> None:
        """Shutdown: hand queued missions back instead of starting them; stop waiting for a slot."""
        self.stopping = True
        if self._waiting is not None:
            self._waiting.cancel()

    async def _wait_for_slot(self, due: MissionDue) -> bool:
        with trio.CancelScope() as scope:
            self._waiting = scope
            await self._slots.acquire_on_behalf_of(due.claim.token)
        self._waiting = None
        return not scope.cancelled_caught

    def _update_agent(self, agent: Agent) -> None:
        self._agent = agent
        limit = concurrency_limit(agent, self._legacy_limit)
        if limit != self._limit:
            self._limit = limit
            self._slots.total_tokens = max(1, limit)

    async def _run(self, due: MissionDue) -> None:
        outcome = MissionOutcome(due.mission.id, ERROR, error="cancelled before it finished")
        try:
            outcome = await self._run_mission(due)
        finally:
            self._in_flight.pop(due.claim.token, None)
            self._slots.release_on_behalf_of(due.claim.token)
            due.batch.report(outcome)  # also when cancelled, so a waiting tick still completes
            self._book.note(due, outcome)
