"""The LLM circuit breaker in the runtime: an outage parks missions (no attempt used) and stops
dispatch until a probe is answered; one user's hostile input never stops planning for others."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
import asyncpg
import pytest
import trio

from fake_llm import Reply, plan_reply, running_fake_llm, tool_turn
from observability.metrics import Metrics
from planning import CREATE_TASK, ledger, planning_runtime
from seed import fetch, insert_rows, mission

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"service": "mana-ai", **labels}) or 0.0


async def seed(pool: asyncpg.Pool, users: list[str], per_user: int = 1, created_at: datetime = PAST) -> None:
    await insert_rows(pool, *[{**mission(f"{user}-m{i}", user=user, title=f"TITLE-{user}"), "created_at": created_at}
                              for user in users for i in range(per_user)])


async def statuses(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await fetch(pool, "SELECT status, count(*) AS n FROM mana_ai.mission_runs GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


async def test_one_users_hostile_input_never_opens_the_circuit_for_everyone(pool: asyncpg.Pool) -> None:
    """A prompt the upstream answers with a 500, for one user only, across many of their missions:
    those missions use their attempts as before; the circuit stays closed and others are planned."""
    await seed(pool, ["hostile"], per_user=8)
    metrics = Metrics()
    async with running_fake_llm() as llm:
        llm.responder = lambda body: (Reply(status=500, body="internal error") if "TITLE-hostile" in json.dumps(body)
                                      else plan_reply([CREATE_TASK]))
        async with planning_runtime(pool, llm, metrics, llm_retries=0, llm_circuit_failures=3,
                                    llm_circuit_probe_s=0.1) as runtime:
            first = await runtime.snapshots.run_cycle()
            assert runtime.circuit.state == "closed"
            await seed(pool, ["friendly"], created_at=datetime.now(timezone.utc))
            second = await runtime.snapshots.run_cycle()
    assert len(first.errors) == 8 and first.plans_written_back == 0
    assert second.plans_written_back == 1  # beside the hostile missions' second attempts
    assert sample(metrics, "mana_ai_llm_circuit_opened_total") == 0
    assert sample(metrics, "mana_ai_llm_circuit_parked_total") == 0
    [run] = await ledger(pool, "hostile-m0")
    assert run["status"] == "retry" and run["attempts"] == 2  # its own fault: each attempt counts


async def test_with_min_users_1_one_users_failures_do_open_it(pool: asyncpg.Pool) -> None:
    """The setting for a single-user deployment (and proof the test above can fail)."""
    await seed(pool, ["only"], per_user=4)
    metrics = Metrics()
    async with running_fake_llm(Reply(status=500, body="internal error")) as llm:
        async with planning_runtime(pool, llm, metrics, llm_retries=0, llm_circuit_failures=3,
                                    llm_circuit_min_users=1, llm_circuit_probe_s=30) as runtime:
            stats = await runtime.snapshots.run_cycle()
            assert runtime.circuit.state == "open"
    assert len(stats.errors) == 2 and sample(metrics, "mana_ai_llm_circuit_parked_total") == 2


@pytest.mark.parametrize("planner", ["json", "tools"])
async def test_an_outage_parks_missions_and_they_are_planned_once_it_ends(pool: asyncpg.Pool, planner: str) -> None:
    users = [f"u{i}" for i in range(6)]
    await seed(pool, users)
    metrics = Metrics()
    down = True
    answer = plan_reply([CREATE_TASK]) if planner == "json" else tool_turn(content="Done.")
    async with running_fake_llm() as llm:
        llm.responder = lambda body: Reply(status=503, body="unavailable") if down else answer
        async with planning_runtime(pool, llm, metrics, llm_retries=0, max_attempts=2, planner=planner,
                                    llm_circuit_failures=3, llm_circuit_probe_s=0.2) as runtime:
            first = await runtime.snapshots.run_cycle()
            assert runtime.circuit.state in ("open", "probing")
            # 3 failures opened it: 2 of them used an attempt, the rest were parked
            assert len(first.errors) == 2
            assert sample(metrics, "mana_ai_llm_circuit_parked_total") == 4
            sent = len(llm.requests)
            held = await runtime.snapshots.run_cycle()  # nothing is claimed while it is open
            assert held.due_mission_count == 0
            with trio.fail_after(5):
                while len(llm.requests) < sent + 2:  # probes, one at a time, still failing
                    await trio.sleep(0.05)
            assert llm.max_in_flight <= 6
            down = False
            with trio.fail_after(5):
                while not runtime.circuit.admits():
                    await trio.sleep(0.05)
            after = await runtime.snapshots.run_cycle()
    assert after.plans_written_back == 6 and after.errors == []
    assert await statuses(pool) == {"planned": 6}
    runs = await fetch(pool, "SELECT max(attempts) AS a FROM mana_ai.mission_runs")
    assert runs[0]["a"] <= 2  # never past max_attempts: nothing died
    assert sample(metrics, "mana_ai_llm_circuit_opened_total") == 1
    assert sample(metrics, "mana_ai_llm_circuit_open") == 0
