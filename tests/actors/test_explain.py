"""`explain`: the first reason that keeps a mission from being due, in the daemon's order."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from actors.explain import Situation, explain
from store.inspect import RunRow
from store.records import Agent
from store.research_jobs import ResearchJobRow

NOW = datetime(2026, 4, 15, 12, 0, tzinfo=timezone.utc)
BASE = Situation(record={"state": "active", "nextRunAt": "2026-04-15T09:00:00.000Z"}, tombstone=False, run=None,
                 agent=None, now_iso="2026-04-15T12:00:00.000Z", db_now=NOW, used_24h=None,
                 waiting_for_slot=False, in_flight=False)


def run(status: str, **fields: object) -> RunRow:
    base = dict(due_slot="2026-04-15T09:00:00.000Z", status=status, attempts=1, next_attempt_at=None,
                lease_owner=None, lease_expires_at=None, last_error=None, iteration_id=None)
    return RunRow(**{**base, **fields})  # type: ignore[arg-type]


def agent(**fields: object) -> Agent:
    return Agent.from_record("u-1", {"id": "a1", "name": "A", **fields})


@pytest.mark.parametrize(("changes", "reason"), [
    ({}, "due"),
    ({"tombstone": True}, "deleted"),
    ({"record": {"state": "active", "nextRunAt": "x", "deletedAt": "2026-01-01"}}, "deleted"),
    ({"record": {"state": "done", "nextRunAt": "2026-04-15T09:00:00.000Z"}}, "not-active"),
    ({"record": {"state": "active"}}, "no-next-run"),
    ({"record": {"state": "active", "nextRunAt": 5}}, "no-next-run"),
    ({"record": {"state": "active", "nextRunAt": "2026-04-15T12:00:00.001Z"}}, "in-the-future"),
    # an instant, whatever its form: the text of these sorts the other way
    ({"record": {"state": "active", "nextRunAt": "2026-04-15T13:59:00.000+02:00"}}, "due"),
    ({"record": {"state": "active", "nextRunAt": "2026-04-15T12:00:00Z"}}, "due"),
    ({"record": {"state": "active", "nextRunAt": "2026-04-15T02:00:01-10:00"}}, "in-the-future"),
    ({"record": {"state": "active", "nextRunAt": "0"}}, "next-run-unreadable"),
    ({"record": {"state": "active", "nextRunAt": "2026-02-30T00:00:00Z"}}, "next-run-unreadable"),
    ({"run": run("planned", iteration_id="i")}, "planned"),
    ({"run": run("dead", attempts=5)}, "dead"),
    ({"run": run("retry", next_attempt_at=NOW + timedelta(seconds=1))}, "backing-off"),
    ({"run": run("retry", next_attempt_at=NOW)}, "due"),
    ({"run": run("running", lease_owner="x", lease_expires_at=NOW + timedelta(minutes=1))}, "leased"),
    ({"run": run("running", lease_owner="x", lease_expires_at=NOW - timedelta(minutes=1))}, "due"),
    ({"run": run("running", lease_expires_at=NOW + timedelta(minutes=1)), "waiting_for_slot": True},
     "waiting-for-slot"),
    ({"run": run("running", lease_expires_at=NOW + timedelta(minutes=1)), "in_flight": True}, "running"),
    ({"agent": agent(state="paused")}, "agent-paused"),
    ({"agent": agent(state="archived")}, "agent-archived"),
    ({"agent": agent(maxTokensPerDay=100), "used_24h": 100}, "over-budget"),
    ({"agent": agent(maxTokensPerDay=100), "used_24h": 99}, "due"),
    ({"agent": agent(maxTokensPerDay=0), "used_24h": 0}, "over-budget"),
    ({"agent": agent(state="paused"), "run": run("planned")}, "planned"),  # the ledger speaks first
])
def test_reasons(changes: dict[str, object], reason: str) -> None:
    verdict = explain(dataclasses.replace(BASE, **changes))  # type: ignore[arg-type]
    assert verdict.reason == reason
    assert verdict.due is (reason == "due")


def research(status: str = "pending") -> ResearchJobRow:
    return ResearchJobRow("m1", "t-1", "gemini-deep-research-max", status, "2026-04-15T09:00:00.000Z", 2, None,  # type: ignore[arg-type]
                          NOW - timedelta(minutes=10), None, None, 600.0)


@pytest.mark.parametrize(("changes", "reason", "due"), [
    ({"research": research(), "run": run("retry", attempts=0, next_attempt_at=NOW + timedelta(seconds=30))},
     "research-pending", False),
    ({"research": research(), "run": run("retry", attempts=0, next_attempt_at=NOW)}, "research-pending", True),
    ({"research": research()}, "research-pending", True),
    ({"research": research(), "run": run("planned", iteration_id="i")}, "planned", False),
    ({"research": research(), "run": run("running", lease_owner="x", lease_expires_at=NOW + timedelta(minutes=1))},
     "leased", False),
    ({"research": research("completed")}, "due", True),
])
def test_a_parked_mission_is_research_pending(changes: dict[str, object], reason: str, due: bool) -> None:
    verdict = explain(dataclasses.replace(BASE, **changes))  # type: ignore[arg-type]
    assert (verdict.reason, verdict.due) == (reason, due)
    if reason == "research-pending":
        assert verdict.detail.startswith("deep-research task t-1 submitted 10 min ago, parked 2 times")
