"""Why a mission is or is not due right now (pure; the inspection endpoint's core)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from planner.iteration import iso_ms
from store.inspect import RunRow
from store.records import Agent


@dataclass(frozen=True)
class Verdict:
    due: bool
    reason: str  # a stable code, e.g. "backing-off"
    detail: str  # for humans, e.g. "until 2026-11-24T05:00:00.000Z"


@dataclass(frozen=True)
class Situation:
    """What the daemon knows about one mission at one moment."""

    record: Mapping[str, Any]
    tombstone: bool
    run: RunRow | None  # the ledger row of the current due slot (nextRunAt)
    agent: Agent | None  # None: legacy or unknown agent
    now_iso: str  # the app clock, compared with nextRunAt as the due query does
    db_now: datetime  # the database clock, compared with leases and backoff
    used_24h: int | None  # the agent's token use, when it has a budget
    waiting_for_slot: bool  # delivered to its agent actor, not started
    in_flight: bool


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
    if next_run > s.now_iso:
        return Verdict(False, "in-the-future", f"nextRunAt {next_run}")
    ledger = _ledger_verdict(s)
    if ledger is not None:
        return ledger
    if s.agent is not None and s.agent.state in ("paused", "archived"):
        return Verdict(False, f"agent-{s.agent.state}", f"agent {s.agent.id} is {s.agent.state}")
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
