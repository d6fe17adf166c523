"""AgentRegistry: spawns one AgentActor per (user, agent) on first use and supervises it.

The registry holds every mailbox's send side. A full mailbox is decided here, visibly:
`skipped-concurrency`, counted and logged, and the claim handed back. An actor that crashes
is restarted (logged and counted); actors whose agent went away are stopped when idle.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import trio

from actors.agent import ActorBook, ActorKey, AgentActor, AgentStats, Runner
from actors.messages import SKIPPED_CONCURRENCY, SKIPPED_SHUTDOWN, MissionDue, MissionOutcome
from observability.metrics import Metrics

log = logging.getLogger(__name__)

# Hands a claim back; contains database trouble itself (actors/hand_back.py): never raises for it.
Releaser = Callable[[MissionDue, str], Awaitable[None]]


@dataclass
class _Entry:
    mailbox: trio.MemorySendChannel[MissionDue]
    inbox: trio.MemoryReceiveChannel[MissionDue]
    actor: AgentActor | None = None
    book: ActorBook = field(default_factory=ActorBook)
    restarts: int = 0
    done: trio.Event = field(default_factory=trio.Event)


class AgentRegistry:
    def __init__(self, run_mission: Runner, release: Releaser, metrics: Metrics, *, mailbox_size: int,
                 legacy_limit: int, restart_delay_s: float = 0.5) -> None:
        self._run_mission = run_mission
        self._release = release
        self._metrics = metrics
        self._mailbox_size = mailbox_size
        self._legacy_limit = legacy_limit
        self._restart_delay_s = restart_delay_s
        self._entries: dict[ActorKey, _Entry] = {}
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self._stop_deadline: float | None = None  # trio time; in-flight missions are cancelled then

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Owns the actors' nursery; returns once `stop()` was called and every actor ended."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # -- sending --------------------------------------------------------------------------

    async def deliver(self, due: MissionDue) -> None:
        """Put a claimed mission in its agent's mailbox, or skip it if the mailbox is full."""
        if self._stopping:
            await self.skip(due, SKIPPED_SHUTDOWN)
            return
        key: ActorKey = (due.mission.user_id, due.agent.id if due.agent else None)
        entry = self._entries.get(key) or self._spawn(key)
        try:
            entry.mailbox.send_nowait(due)
        except (trio.WouldBlock, trio.ClosedResourceError):
            await self.skip(due, SKIPPED_CONCURRENCY)
        else:
            entry.book.queued[due.claim.token] = due.mission.id

    async def skip(self, due: MissionDue, decision: str) -> None:
        """A mission that will not run now: count the decision, hand the slot back, report."""
        if due.agent is not None and decision.startswith("skipped-") and decision != "skipped-shutdown":
            self._metrics.agent_decisions.labels(decision=decision).inc()
        log.info("mission.skipped", extra={"mission": due.mission.id, "user": due.mission.user_id,
                                           "agent": due.agent.id if due.agent else "legacy",
                                           "decision": decision})
        outcome = MissionOutcome(due.mission.id, decision)
        try:
            with trio.move_on_after(10):
                await self._release(due, decision)
        except Exception:  # noqa: BLE001 - the releaser contains database trouble; a bug must not end the actor
            log.error("mission.hand_back_crashed", exc_info=True,
                      extra={"mission": due.mission.id, "user": due.mission.user_id})
        finally:
            due.batch.report(outcome)
            entry = self._entries.get((due.mission.user_id, due.agent.id if due.agent else None))
            if entry is not None:
                entry.book.note(due, outcome)

    # -- lifecycle ------------------------------------------------------------------------

    def _spawn(self, key: ActorKey) -> _Entry:
        assert self._nursery is not None, "AgentRegistry.run() is not running"
        mailbox, inbox = trio.open_memory_channel[MissionDue](self._mailbox_size)
        entry = _Entry(mailbox, inbox)
        self._entries[key] = entry
        self._nursery.start_soon(self._supervise, key, entry)
        return entry

    async def _supervise(self, key: ActorKey, entry: _Entry) -> None:
        try:
            while True:
                actor = AgentActor(key, entry.inbox, self._run_mission, self.skip, entry.book,
                                   legacy_limit=self._legacy_limit)
                actor.stopping = self._stopping
                entry.actor = actor
                try:
                    await actor.run()
                    return  # mailbox closed and drained: a clean stop
                except Exception:  # noqa: BLE001 - supervision: restart, never take the daemon down
                    entry.restarts += 1
                    self._metrics.actor_restarts.inc()
                    log.error("agent_actor.crashed", exc_info=True,
                              extra={"user": key[0], "agent": key[1] or "legacy", "restarts": entry.restarts})
                    await trio.sleep(self._restart_delay_s)
        finally:
            if self._entries.get(key) is entry:
                del self._entries[key]
            entry.done.set()

    def retire(self, live_agents: Iterable[tuple[str, str]]) -> int:
        """Stop idle actors except those of the given live agents; returns how many.

        Called after each dispatch with the agents just loaded: actors of agents that were
        deleted (and idle legacy actors) end; an actor is cheap to start again when needed.
        """
        live = set(live_agents)
        retired = 0
        for key, entry in list(self._entries.items()):
            gone = key[1] is None or (key[0], key[1]) not in live
            if gone and entry.actor is not None and entry.actor.idle:
                del self._entries[key]
                entry.mailbox.close()
                retired += 1
        return retired

    async def stop(self, grace_s: float) -> None:
        """Shutdown: no new missions start; in-flight ones get `grace_s`, then are cancelled.

        Idempotent: a second call waits for the first call's deadline, never a second grace.
        """
        self._stopping = True
        if self._stop_deadline is None:
            self._stop_deadline = trio.current_time() + grace_s
        entries = list(self._entries.values())
        for entry in entries:
            if entry.actor is not None:
                entry.actor.stop()
            entry.mailbox.close()
        with trio.move_on_at(self._stop_deadline):
            for entry in entries:
                await entry.done.wait()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()  # runners hand their claims back as they unwind

    def actor_stats(self) -> list[AgentStats]:
        return [e.actor.stats() for e in self._entries.values() if e.actor is not None]

    def stats_of(self, key: ActorKey) -> AgentStats | None:
        entry = self._entries.get(key)
        return entry.actor.stats() if entry is not None and entry.actor is not None else None

    def __len__(self) -> int:
        return len(self._entries)
