"""`explain`: the first reason that keeps a mission from being due, in the daemon's order."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from actors.agent import AgentStats, InFlight
from actors.explain import CapsUse, Situation, budgeted_agents, explain, explain_missions
from store.inspect import MissionRow, RunRow, UserMissions
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
    # the caps above the agent: the widest one reached names the reason
    ({"caps": CapsUse(user_cap=100, user_used=100)}, "over-user-budget"),
    ({"caps": CapsUse(user_cap=100, user_used=99)}, "due"),
    ({"caps": CapsUse(user_cap=0, user_used=0)}, "over-user-budget"),
    ({"caps": CapsUse(global_cap=10, global_used=10)}, "over-global-budget"),
    ({"caps": CapsUse(global_cap=10, global_used=9)}, "due"),
    ({"caps": CapsUse(user_cap=100, user_used=100, global_cap=10, global_used=10),
      "agent": agent(maxTokensPerDay=100), "used_24h": 100}, "over-global-budget"),
    ({"caps": CapsUse(user_cap=100, user_used=100), "agent": agent(maxTokensPerDay=100), "used_24h": 100},
     "over-user-budget"),
    ({"caps": CapsUse(global_cap=10, global_used=10), "agent": agent(state="paused")}, "agent-paused"),
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


def stats(user_id: str, agent_id: str | None, *, waiting: tuple[str, ...] = (),
          in_flight: tuple[str, ...] = ()) -> AgentStats:
    return AgentStats((user_id, agent_id), None, 1, tuple(InFlight(m, 0.0) for m in in_flight), len(waiting),
                      waiting, ())


def mission(mission_id: str, run_row: RunRow | None = None, **fields: object) -> MissionRow:
    return MissionRow(mission_id, {"id": mission_id, "state": "active", "nextRunAt": "2026-04-15T09:00:00.000Z",
                                   **fields}, False, run_row)


def test_every_mission_of_a_user_gets_the_verdict_of_what_its_actor_and_agent_are_doing() -> None:
    """The verdicts of `GET /internal/missions/{userId}`, the console and the demo: one function."""
    leased = {"lease_owner": "me", "lease_expires_at": NOW + timedelta(minutes=1)}
    found = UserMissions(
        missions=[mission("m-wait", run("running", **leased), agentId="a1"),
                  mission("m-fly", run("running", **leased), agentId="a1"),
                  mission("m-budget", agentId="a2"),
                  mission("m-legacy", run("running", **leased)),
                  mission("m-gone", agentId="gone"),
                  mission("m-number", agentId=7),
                  mission("m-research", agentId="a1"),
                  mission("m-other", run("running", **leased))],
        agents={("u-1", "a1"): agent(), ("u-1", "a2"): Agent.from_record("u-1", {"id": "a2", "maxTokensPerDay": 100})},
        db_now=NOW)
    actors = [stats("u-1", "a1", waiting=("m-wait",), in_flight=("m-fly",)), stats("u-1", None, in_flight=("m-legacy",)),
              stats("u-2", None, in_flight=("m-other",))]  # another user's actor never speaks for this one's
    assert budgeted_agents(found) == ["a2"]
    verdicts = explain_missions("u-1", found, actors, {"a2": 100}, {"m-research": research()})
    assert [(v.mission.mission_id, v.agent_id, v.agent.id if v.agent else None, v.verdict.reason, v.verdict.due)
            for v in verdicts] == [
        ("m-wait", "a1", "a1", "waiting-for-slot", False),
        ("m-fly", "a1", "a1", "running", False),
        ("m-budget", "a2", "a2", "over-budget", False),
        ("m-legacy", None, None, "running", False),
        ("m-gone", "gone", None, "due", True),
        ("m-number", None, None, "due", True),
        ("m-research", "a1", "a1", "research-pending", True),
        ("m-other", None, None, "leased", False),
    ]
    assert explain_missions("u-1", found, actors, {"a2": 99}, {})[2].verdict.reason == "due"
    assert explain_missions("u-1", UserMissions([], {}, None), actors, {}, {}) == []
