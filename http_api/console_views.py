"""What the console's pages show, built from what the daemon knows (pure: `now` is passed in).

The templates under `http_api/templates/console/` render these values and nothing else; every
text in them is escaped there (titles and names are user text).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from actors.agent import AgentStats
from actors.snapshot import FinishedCycle
from store.inspect import AgentSnapshotRow, SpendRow
from store.records import Agent
from upstream.fair_slots import WaitingUser

# the reasons of actors/explain.py, in words (docs/inspection.md has the codes)
REASON_WORDS: Mapping[str, str] = {
    "deleted": "Deleted",
    "not-active": "Not active",
    "no-next-run": "No next run is set",
    "next-run-unreadable": "Its next run is not a date and time it can read",
    "in-the-future": "Not due yet",
    "planned": "Already planned for this slot",
    "dead": "Dead: gave up after repeated failures",
    "research-pending": "Waiting for its deep-research job",
    "backing-off": "Backing off after a failed attempt",
    "waiting-for-slot": "Waiting for a free slot of its agent",
    "running": "Being planned now",
    "leased": "Claimed by another instance",
    "agent-paused": "Its agent is paused",
    "agent-archived": "Its agent is archived",
    "over-budget": "Its agent used up its daily token budget",
    "over-user-budget": "Its user used up the daily token cap per user",
    "over-global-budget": "The deployment used up its daily token cap: planning is paused",
    "due": "Due: the next cycle runs it",
}


def reason_words(reason: str) -> str:
    return REASON_WORDS.get(reason, reason)


def age(seconds: float | None) -> str:
    """A short human duration: `4 s`, `12 min`, `3 h`, `2 d`; `—` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def digits(value: float | int | None) -> str:
    """An integer with thousands separators; `—` for None."""
    if value is None:
        return "—"
    return f"{int(value):,}"


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str  # the tooltip: "12 min ago: 3 planned"


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    bars: tuple[Bar, ...]
    peak: int
    total: int


def bar_chart(counts: list[int], *, width: int = 600, height: int = 120) -> BarChart:
    """One bar per minute, the oldest first, scaled to the highest; for an inline SVG."""
    peak = max(counts, default=0)
    slot = width / max(1, len(counts))
    bars = []
    for i, count in enumerate(counts):
        h = 0.0 if peak == 0 else height * count / peak
        ago = len(counts) - 1 - i
        when = "this minute" if ago == 0 else f"{ago} min ago"
        bars.append(Bar(round(i * slot + 1, 2), round(height - h, 2), round(max(1.0, slot - 2), 2), round(h, 2),
                        f"{when}: {count} planned"))
    return BarChart(width, height, tuple(bars), peak, sum(counts))


@dataclass(frozen=True)
class OutcomeView:
    kind: str
    mission_id: str
    ago: str
    error: str | None


@dataclass(frozen=True)
class AgentRow:
    user_id: str
    agent_id: str | None  # None: the user's legacy actor (missions without a known agent)
    name: str
    state: str  # active, paused, archived, deleted, legacy
    in_flight: int | None  # None: no actor alive
    queued: int | None
    used_24h: int
    budget: int | None  # None: no budget
    recent: tuple[OutcomeView, ...]

    @property
    def over_budget(self) -> bool:
        return self.budget is not None and self.used_24h >= self.budget

    @property
    def meter_max(self) -> int:
        return max(1, self.budget or 0)


def agent_rows(snapshots: Iterable[AgentSnapshotRow], actors: Iterable[AgentStats],
               usage: Mapping[tuple[str, str], int], now: float, *, outcomes: int = 5) -> list[AgentRow]:
    """Every agent snapshot (paused, archived and deleted ones too) joined with its live actor and
    24 h token use; then live actors without a snapshot (legacy ones)."""
    live = {s.key: s for s in actors}
    rows = []
    for snap in snapshots:
        agent = Agent.from_record(snap.user_id, snap.record)
        deleted = snap.tombstone or bool(agent.deleted_at)
        stats = live.pop((snap.user_id, snap.agent_id), None)
        budget = agent.max_tokens_per_day
        rows.append(_row(snap.user_id, snap.agent_id, agent.name, "deleted" if deleted else agent.state, stats,
                         usage.get((snap.user_id, snap.agent_id), 0),
                         None if budget is None or budget < 0 else int(budget), now, outcomes))
    for key, stats in sorted(live.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        name = stats.agent.name if stats.agent is not None else "legacy (no agent)"
        state = stats.agent.state if stats.agent is not None else "legacy"
        rows.append(_row(key[0], key[1], name, state, stats, 0, None, now, outcomes))
    return rows


def _row(user_id: str, agent_id: str | None, name: str, state: str, stats: AgentStats | None, used: int,
         budget: int | None, now: float, outcomes: int) -> AgentRow:
    recent = () if stats is None else tuple(
        OutcomeView(o.kind, o.mission_id, age(now - o.at), o.error) for o in stats.recent[:outcomes])
    return AgentRow(user_id, agent_id, name, state, None if stats is None else len(stats.in_flight),
                    None if stats is None else stats.queued, used, budget, recent)


@dataclass(frozen=True)
class AgentSpend:
    agent_id: str
    name: str  # the agent's name; its id when its snapshot is not at hand; "legacy" for legacy missions
    used_24h: int
    budget: int | None  # the agent's maxTokensPerDay; None: none

    @property
    def share(self) -> float | None:
        return None if self.budget is None else self.used_24h / max(1, self.budget)


@dataclass(frozen=True)
class UserSpend:
    user_id: str
    used_24h: int
    cap: int | None  # MANA_AI_USER_MAX_TOKENS_PER_DAY; None: no cap
    agents: tuple[AgentSpend, ...]  # closest to their budget first, then most used

    @property
    def over_cap(self) -> bool:
        return self.cap is not None and self.used_24h >= self.cap

    @property
    def meter_max(self) -> int:
        return max(1, self.cap or 0)


@dataclass(frozen=True)
class SpendView:
    users: tuple[UserSpend, ...]  # closest to the user cap first (most used first)
    total_24h: int
    global_cap: int | None  # MANA_AI_MAX_TOKENS_PER_DAY; None: no cap
    paused: bool            # planning paused at the deployment's cap
    limit: int              # users shown at most

    @property
    def meter_max(self) -> int:
        return max(1, self.global_cap or 0)

    @property
    def over_cap(self) -> bool:
        return self.global_cap is not None and self.total_24h >= self.global_cap


def spend_view(rows: Iterable[SpendRow], agents: Mapping[tuple[str, str], Agent], *, user_cap: int | None,
               global_cap: int | None, paused: bool, limit: int, legacy_id: str) -> SpendView:
    """Tokens per user and agent over 24 h next to their caps; the users closest to their cap
    first. `rows` come grouped by user (store/inspect.py `spend_24h`); `agents` name them."""
    by_user: dict[str, list[AgentSpend]] = {}
    user_used: dict[str, int] = {}
    total = 0
    for r in rows:
        total = r.total
        user_used[r.user_id] = r.user_used
        agent = agents.get((r.user_id, r.agent_id))
        budget = agent.max_tokens_per_day if agent is not None else None
        name = "legacy" if r.agent_id == legacy_id else (agent.name if agent is not None else r.agent_id)
        by_user.setdefault(r.user_id, []).append(
            AgentSpend(r.agent_id, name, r.used, None if budget is None or budget < 0 else int(budget)))
    users = [UserSpend(user_id, user_used[user_id], user_cap,
                       tuple(sorted(spends, key=lambda a: (-(a.share if a.share is not None else -1.0),
                                                           -a.used_24h, a.agent_id))))
             for user_id, spends in by_user.items()]
    users.sort(key=lambda u: (-(u.used_24h / max(1, u.cap) if u.cap is not None else u.used_24h), u.user_id))
    return SpendView(tuple(users), total, global_cap, paused, limit)


@dataclass(frozen=True)
class CycleRow:
    reason: str
    ago: str
    duration: str
    due: int
    produced: int
    written_back: int
    parse_failures: int
    errors: tuple[str, ...]


def cycle_rows(cycles: Iterable[FinishedCycle], now: float) -> list[CycleRow]:
    return [CycleRow(c.reason, age(now - c.finished_at), _duration(c.duration_s), c.stats.due_mission_count,
                     c.stats.plans_produced, c.stats.plans_written_back, c.stats.parse_failures,
                     tuple(c.stats.errors)) for c in cycles]


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


@dataclass(frozen=True)
class HealthView:
    ok: bool
    database: bool
    llm: Mapping[str, Any] | None  # /health's `llm` object; None when not reported
    notify: Mapping[str, Any]
    sync_changes: Mapping[str, Any] | None  # /health's `syncChanges` (the generation found at start)
    last_cycle_age: str
    cycles_completed: int
    consecutive_failures: int
    last_cycle_error: str | None
    cycle_running: bool
    agent_actors: int


def health_view(body: Mapping[str, Any]) -> HealthView:
    """The console's reading of `/health`'s body (the same function computes both)."""
    checks = body["checks"]
    return HealthView(bool(body["ok"]), bool(checks["database"]), body.get("llm"), checks["notify"],
                      body.get("syncChanges"), age(checks["lastCycleAgeSeconds"]), checks["cyclesCompleted"],
                      checks["consecutiveCycleFailures"], checks["lastCycleError"], checks["cycleRunning"],
                      checks["agentActors"])


def iso_or_dash(at: datetime | None) -> str:
    return "—" if at is None else at.strftime("%Y-%m-%d %H:%M:%S UTC")


QUEUE_ROWS = 20  # users shown waiting for an LLM slot, the longest wait first


@dataclass(frozen=True)
class QueueRow:
    user_id: str
    missions: int
    waiting: str  # how long its oldest request has waited, as `age` says it


@dataclass(frozen=True)
class LlmQueueView:
    users: int
    missions: int
    rows: list[QueueRow]  # at most QUEUE_ROWS, the longest wait first


def llm_queue_view(waiting: list[WaitingUser]) -> LlmQueueView:
    """Who waits for an LLM slot (sorted by the longest wait), for the overview."""
    rows = [QueueRow(w.user or "(none)", w.missions, age(w.longest_wait_s) if w.longest_wait_s >= 1 else "< 1 s")
            for w in waiting[:QUEUE_ROWS]]
    return LlmQueueView(len(waiting), sum(w.missions for w in waiting), rows)


BULK_GROUP_ROWS = 100  # (user, agent) groups of dead slots the bulk section shows, the users with the most first


@dataclass(frozen=True)
class DeadGroup:
    """One user's open dead slots for the bulk actions: in all, and per agent."""

    user_id: str
    total: int
    agents: list[tuple[str | None, int]]  # (agent id, slots); None: missions without an agent


def dead_groups(rows: Iterable[tuple[str, str | None, int]]) -> list[DeadGroup]:
    """(user, agent, slots) rows, users with the most first, grouped by user (order kept)."""
    groups: dict[str, list[tuple[str | None, int]]] = {}
    for user_id, agent_id, slots in rows:
        groups.setdefault(user_id, []).append((agent_id, slots))
    return [DeadGroup(user, sum(n for _, n in agents), agents) for user, agents in groups.items()]


BULK_VERBS = {"retry": ("Retry", "retried"), "discard": ("Discard", "discarded")}


def bulk_notice(action: str, changed: int, superseded: int, complete: bool) -> str:
    """What a bulk retry or discard did, in words, for the dead-slots page."""
    verb = BULK_VERBS.get(action, ("", action))[1]
    text = f"{verb.capitalize()} {changed:,} dead slot{'' if changed == 1 else 's'}."
    if action == "retry" and superseded:
        text += (f" {superseded:,} could not run again (their mission has moved on, or was deleted): they stay"
                 " dead; discard them.")
    if not complete:
        text += " Stopped after its time limit: run it again to go on."
    return text
