"""AgentRegistry and AgentActor with fake runners (pure trio, no database)."""

from __future__ import annotations

from datetime import datetime, timezone
from uuid import uuid4

import trio
import trio.testing

from actors.messages import ERROR, PLANNED, MissionDue, MissionOutcome, TickBatch, TickStats
from actors.registry import AgentRegistry
from observability.metrics import Metrics
from store.records import Agent, Mission
from store.runs import Claim


def mission(mission_id: str, user: str = "u-1", agent_id: str | None = "a1") -> Mission:
    return Mission.from_record(user, {"id": mission_id, "state": "active", "nextRunAt": "2026-01-01T00:00:00.000Z",
                                      "agentId": agent_id})


def agent(agent_id: str = "a1", **fields: object) -> Agent:
    return Agent.from_record("u-1", {"id": agent_id, "name": agent_id, **fields})


def due(mission_id: str, batch: TickBatch, the_agent: Agent | None) -> MissionDue:
    m = mission(mission_id, agent_id=the_agent.id if the_agent else None)
    batch.expect()
    return MissionDue(m, the_agent, Claim(m.user_id, m.id, "slot", uuid4(), 1), datetime.now(timezone.utc), batch)


async def test_a_crashing_actor_is_restarted_and_keeps_serving() -> None:
    calls: list[str] = []
    released: list[tuple[str, str]] = []

    async def run_mission(item: MissionDue) -> MissionOutcome:
        calls.append(item.mission.id)
        if item.mission.id == "boom":
            raise RuntimeError("bug in a mission runner")
        return MissionOutcome(item.mission.id, PLANNED, plan_produced=True)

    async def release(item: MissionDue, reason: str) -> None:
        released.append((item.mission.id, reason))

    metrics = Metrics()
    registry = AgentRegistry(run_mission, release, metrics, mailbox_size=4, legacy_limit=4, restart_delay_s=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        batch = TickBatch(TickStats("now"))
        await registry.deliver(due("boom", batch, agent()))
        await trio.testing.wait_all_tasks_blocked()
        await registry.deliver(due("fine", batch, agent()))
        batch.seal()
        with trio.fail_after(5):
            stats = await batch.wait()
        await registry.stop(grace_s=1)
    assert calls == ["boom", "fine"]
    assert stats.errors == ["mission=boom: cancelled before it finished"] and stats.plans_written_back == 1
    assert metrics.registry.get_sample_value("mana_ai_agent_actor_restarts_total", {"service": "mana-ai"}) == 1


async def test_idle_actors_of_agents_that_went_away_are_stopped() -> None:
    async def run_mission(item: MissionDue) -> MissionOutcome:
        return MissionOutcome(item.mission.id, PLANNED)

    async def release(item: MissionDue, reason: str) -> None:
        pass

    registry = AgentRegistry(run_mission, release, Metrics(), mailbox_size=4, legacy_limit=4)
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        batch = TickBatch(TickStats("now"))
        await registry.deliver(due("m1", batch, agent("a1")))
        await registry.deliver(due("m2", batch, agent("a2")))
        await registry.deliver(due("m3", batch, None))
        batch.seal()
        await batch.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert len(registry) == 3
        assert registry.retire([("u-1", "a1")]) == 2  # a2 is gone, the legacy actor is idle
        await trio.testing.wait_all_tasks_blocked()
        assert [s.key for s in registry.actor_stats()] == [("u-1", "a1")]
        await registry.stop(grace_s=1)


async def test_stop_hands_queued_missions_back_and_cancels_in_flight_after_grace() -> None:
    started = trio.Event()
    released: list[tuple[str, str]] = []

    async def run_mission(item: MissionDue) -> MissionOutcome:
        started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def release(item: MissionDue, reason: str) -> None:
        released.append((item.mission.id, reason))

    registry = AgentRegistry(run_mission, release, Metrics(), mailbox_size=4, legacy_limit=4)
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        batch = TickBatch(TickStats("now"))
        one_slot = agent("a1", maxConcurrentMissions=1)
        await registry.deliver(due("running", batch, one_slot))
        await registry.deliver(due("queued", batch, one_slot))
        await started.wait()
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(5):
            await registry.stop(grace_s=0.1)
    assert released == [("queued", "skipped-shutdown")]
    batch.seal()
    assert batch.done and batch.stats.errors == ["mission=running: cancelled before it finished"]
    assert ERROR == "error"


async def test_a_hand_back_that_fails_never_ends_the_actor_or_its_missions_in_flight() -> None:
    """The releaser contains database trouble itself; whatever else it raises stays in `skip`:
    the actor goes on and its mission in flight finishes (before, the error ended the actor's
    loop and cancelled that mission)."""
    finish = trio.Event()

    async def run_mission(item: MissionDue) -> MissionOutcome:
        await finish.wait()
        return MissionOutcome(item.mission.id, PLANNED, plan_produced=True)

    async def release(item: MissionDue, reason: str) -> None:
        raise RuntimeError("a bug while handing back")

    metrics = Metrics()
    registry = AgentRegistry(run_mission, release, metrics, mailbox_size=4, legacy_limit=4, restart_delay_s=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        batch = TickBatch(TickStats("now"))
        await registry.deliver(due("running", batch, agent("a1", maxConcurrentMissions=2)))
        await trio.testing.wait_all_tasks_blocked()
        await registry.deliver(due("paused", batch, agent("a1", state="paused")))
        await trio.testing.wait_all_tasks_blocked()
        finish.set()
        batch.seal()
        with trio.fail_after(5):
            stats = await batch.wait()
        await registry.stop(grace_s=1)
    assert stats.errors == [] and stats.plans_written_back == 1
    assert metrics.registry.get_sample_value("mana_ai_agent_actor_restarts_total", {"service": "mana-ai"}) == 0
