"""Why a mission is or is not due right now (pure).

`explain` judges one mission; `explain_missions` judges every mission of a user with what its
agent actor is doing. Both `GET /internal/missions/{userId}` and the console's missions page
show what `explain_missions` returns, and `mana-ai demo` prints it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from actors.agent import AgentStats
from planner.iteration import iso_ms
from store.inspect import MissionRow, RunRow, UserMissions
from store.instants import instant_of
from store.records import Agent
from store.research_jobs import ResearchJobRow


@dataclass(frozen=True)
class Verdict:
    due: bool
    reason: str  # a stable code, e.g. "backing-off"
    detail: str  # for humans, e.g. "until 2026-11-24T05:00:00.000Z"


@dataclass(frozen=True)
class CapsUse:
    """The rolling 24 h caps above the agent and the use they are checked against (None: no cap,
    or not read)."""

    user_cap: int | None = None    # MANA_AI_USER_MAX_TOKENS_PER_DAY
    user_used: int | None = None   # the user's use, all agents and legacy missions
    global_cap: int | None = None  # MANA_AI_MAX_TOKENS_PER_DAY
    global_used: int | None = None  # the deployment's use


@dataclass(frozen=True)
class Situation:
    """What the daemon knows about one mission at one moment."""

    record: Mapping[str, Any]
    tombstone: bool
    run: RunRow | None  # the ledger row of the current due slot (nextRunAt)
    agent: Agent | None  # None: legacy or unknown agent
    now_iso: str  # the app clock, compared with nextRunAt's instant as the due query does
    db_now: datetime  # the database clock, compared with leases and backoff
    used_24h: int | None  # the agent's token use, when it has a budget
    waiting_for_slot: bool  # delivered to its agent actor, not started
    in_flight: bool
    research: ResearchJobRow | None = None  # the mission's deep-research job (with deep research configured)
    caps: CapsUse = CapsUse()  # the user's and the deployment's caps, when set


def explain(s: Situation) -> Verdict:
    """The first reason in the order the daemon applies them; `due` only if none applies."""
    record = s.record
    if s.tombstone or record.get("deletedAt"):
        return Verdict(False, "deleted", "the mission was deleted")
    state = record.get("state")
    if state != "active":
        return Verdict(False, "not-active", f"state={state}")
    next_run = record.get("nextRunAt")
    if not isinstance(next_run, str) or not next_run:
        return Verdict(False, "no-next-run", "nextRunAt is not set")
    at, now = instant_of(next_run), instant_of(s.now_iso)
    if at is None:  # the grammar of the due query's next_run_at (store/instants.py)
        return Verdict(False, "next-run-unreadable",
                       f"nextRunAt {next_run[:64]!r} names no ISO-8601 instant: never due")
    if now is not None and at > now:
        shown = next_run if next_run == iso_ms(at) else f"{next_run} ({iso_ms(at)})"
        return Verdict(False, "in-the-future", f"nextRunAt {shown}")
    ledger = _ledger_verdict(s)
    parked = _research_verdict(s, ledger)
    if parked is not None:
        return parked
    if ledger is not None:
        return ledger
    if s.agent is not None and s.agent.state in ("paused", "archived"):
        return Verdict(False, f"agent-{s.agent.state}", f"agent {s.agent.id} is {s.agent.state}")
    caps = s.caps
    if caps.global_cap is not None and caps.global_used is not None and caps.global_used >= caps.global_cap:
        return Verdict(False, "over-global-budget",
                       f"the deployment used {caps.global_used} of {caps.global_cap} tokens in 24 h "
                       "(MANA_AI_MAX_TOKENS_PER_DAY): planning is paused until the window frees tokens")
    if caps.user_cap is not None and caps.user_used is not None and caps.user_used >= caps.user_cap:
        return Verdict(False, "over-user-budget",
                       f"the user used {caps.user_used} of {caps.user_cap} tokens in 24 h "
                       "(MANA_AI_USER_MAX_TOKENS_PER_DAY)")
    budget = s.agent.max_tokens_per_day if s.agent is not None else None
    if budget is not None and budget >= 0 and s.used_24h is not None and s.used_24h >= budget:
        return Verdict(False, "over-budget", f"used {s.used_24h} of {budget:g} tokens in 24 h")
    return Verdict(True, "due", "will be claimed by the next cycle")


def _ledger_verdict(s: Situation) -> Verdict | None:
    run = s.run
    if run is None:
        return None
    if run.status == "planned":
        return Verdict(False, "planned", f"already planned for this slot (iteration {run.iteration_id})")
    if run.status == "dead":
        return Verdict(False, "dead", f"dead after {run.attempts} attempts: {run.last_error}")
    if run.status == "retry" and run.next_attempt_at is not None and run.next_attempt_at > s.db_now:
        return Verdict(False, "backing-off", f"until {iso_ms(run.next_attempt_at)} (attempt {run.attempts})")
    if run.status == "running" and run.lease_expires_at is not None and run.lease_expires_at > s.db_now:
        until = iso_ms(run.lease_expires_at)
        if s.waiting_for_slot:
            return Verdict(False, "waiting-for-slot", "waiting for a concurrency slot of its agent")
        if s.in_flight:
            return Verdict(False, "running", f"being planned by {run.lease_owner} (lease until {until})")
        return Verdict(False, "leased", f"leased by instance {run.lease_owner} until {until}")
    return None


def _research_verdict(s: Situation, ledger: Verdict | None) -> Verdict | None:
    """A mission parked while its deep-research job runs (the ledger shows a slot handed back)."""
    job = s.research
    if job is None or job.status != "pending" or (ledger is not None and ledger.reason != "backing-off"):
        return None
    detail = (f"deep-research task {job.task_id} submitted {round(job.age_s / 60)} min ago, "
              f"parked {job.pending_skips} times")
    if ledger is None:
        return Verdict(True, "research-pending", f"{detail}; the next cycle polls it")
    at = s.run.next_attempt_at if s.run is not None else None
    return Verdict(False, "research-pending", f"{detail}; polled again at {iso_ms(at) if at else 'the next cycle'}")


@dataclass(frozen=True)
class MissionVerdict:
    """One mission of a user, the agent it names, and why it is (not) due."""

    mission: MissionRow
    agent_id: str | None  # the record's `agentId` when it is text
    agent: Agent | None  # that agent's snapshot; None: a legacy mission or an unknown agent
    verdict: Verdict


def budgeted_agents(found: UserMissions) -> list[str]:
    """The user's agents with a daily token budget: those whose 24 h use `explain_missions` needs."""
    return [agent_id for (_, agent_id), agent in found.agents.items() if agent.max_tokens_per_day is not None]


def explain_missions(user_id: str, found: UserMissions, actors: Iterable[AgentStats], used_24h: Mapping[str, int],
                     research: Mapping[str, ResearchJobRow], caps: CapsUse = CapsUse()) -> list[MissionVerdict]:
    """Every mission of `found` with its verdict, in `found`'s order; none without a database clock.

    `actors` are the live agent actors (those of other users are ignored), `used_24h` the token
    use of the agents in `budgeted_agents(found)`, `research` the deep-research jobs by mission
    (empty without deep research), `caps` the user's and the deployment's caps and use."""
    db_now = found.db_now
    if db_now is None:
        return []
    now_iso = iso_ms(db_now)
    live = {s.key: s for s in actors if s.key[0] == user_id}
    verdicts = []
    for m in found.missions:
        raw_agent = m.record.get("agentId")
        agent_id = raw_agent if isinstance(raw_agent, str) else None
        agent = found.agents.get((user_id, agent_id)) if agent_id else None
        actor = live.get((user_id, agent.id if agent else None))
        verdict = explain(Situation(
            record=m.record, tombstone=m.tombstone, run=m.run, agent=agent, now_iso=now_iso, db_now=db_now,
            used_24h=used_24h.get(agent.id) if agent else None,
            waiting_for_slot=actor is not None and m.mission_id in actor.waiting,
            in_flight=actor is not None and any(f.mission_id == m.mission_id for f in actor.in_flight),
            research=research.get(m.mission_id), caps=caps))
        verdicts.append(MissionVerdict(m, agent_id, agent, verdict))
    return verdicts
