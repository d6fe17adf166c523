"""The inspection endpoints: live agent actors, one agent in detail, why each mission is (not) due."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import trio

from daemon import SERVICE_KEY, running_daemon
from fake_llm import Reply, running_fake_llm
from planning import agent_row
from seed import fetch, insert_rows, mission

KEY = {"X-Service-Key": SERVICE_KEY}
PAST = datetime.now(timezone.utc) - timedelta(minutes=5)
SLOT = "2026-04-15T09:00:00.000Z"


async def ledger_row(pool: asyncpg.Pool, mission_id: str, status: str, **cols: Any) -> None:
    names = ["user_id", "mission_id", "due_slot", "status", *cols]
    values = ["u-1", mission_id, SLOT, status, *cols.values()]
    placeholders = ", ".join(f"${i + 1}" for i in range(len(values)))
    await fetch(pool, f"INSERT INTO mana_ai.mission_runs ({', '.join(names)}) VALUES ({placeholders}) RETURNING 1",
                *values)


async def test_inspection_needs_the_key_and_answers_404_for_unknown_ids(pool: asyncpg.Pool) -> None:
    async with running_daemon(pool) as d:
        for path in ("/internal/agents", "/internal/agents/u-1/a1", "/internal/missions/u-1"):
            assert (await d.client.get(path)).status_code == 401
        response = await d.client.get("/internal/agents/nobody/nothing", headers=KEY)
        assert response.status_code == 404 and response.json() == {"error": "unknown agent"}
        response = await d.client.get("/internal/missions/nobody", headers=KEY)
        assert response.status_code == 404 and response.json() == {"error": "unknown user"}
        assert (await d.client.get("/internal/agents", headers=KEY)).json() == {"agents": []}


async def test_agents_and_missions_explain_what_is_going_on(pool: asyncpg.Pool) -> None:
    now = datetime.now(timezone.utc)
    await insert_rows(
        pool,
        *[{**row, "created_at": PAST} for row in [
            agent_row("busy", limit=1, policy={"tools": {"create_task": "deny"}, "defaultForAi": "propose"}),
            agent_row("resting", state="paused"),
            agent_row("thrifty", maxTokensPerDay=10),
            mission("m-running", agent_id="busy"), mission("m-waiting", agent_id="busy"),
            mission("m-dead-busy", agent_id="busy"),
            mission("m-agent-paused", agent_id="resting"), mission("m-over-budget", agent_id="thrifty"),
            mission("m-planned"), mission("m-dead"), mission("m-backoff"), mission("m-leased"),
            mission("m-future", next_run_at="2999-01-01T00:00:00.000Z"), mission("m-inactive", state="paused"),
            mission("m-no-next", next_run_at=None)]],
    )
    await ledger_row(pool, "m-planned", "planned", attempts=1, iteration_id="it-1")
    await ledger_row(pool, "m-dead", "dead", attempts=5, last_error="mana-llm 400: no")
    await ledger_row(pool, "m-dead-busy", "dead", attempts=5, last_error="boom", finished_at=now)
    await ledger_row(pool, "m-backoff", "retry", attempts=2, next_attempt_at=now + timedelta(hours=1))
    await ledger_row(pool, "m-leased", "running", attempts=1, lease_owner="other-instance",
                     lease_token="00000000-0000-0000-0000-000000000001", lease_expires_at=now + timedelta(hours=1))
    await fetch(pool, "INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, status, prompt_tokens)"
                      " VALUES ('u-1', 'thrifty', 'x', 'used', 20) RETURNING 1")
    async with running_fake_llm(Reply(hang=True)) as llm, running_daemon(pool, mana_llm_url=llm.url) as d:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(d.client.post, "/internal/tick")  # hangs on the LLM: fine, we look meanwhile
            nursery.start_soon(lambda: d.client.post("/internal/tick", headers=KEY))
            with trio.fail_after(10):
                while llm.in_flight == 0:
                    await trio.sleep(0.02)
            await trio.sleep(0.2)  # let the skipped missions settle

            agents = (await d.client.get("/internal/agents", headers=KEY)).json()["agents"]
            busy = next(a for a in agents if a["agentId"] == "busy")
            assert busy == {"userId": "u-1", "agentId": "busy", "legacy": False, "name": "Recherche",
                            "state": "active", "concurrencyLimit": 1, "inFlight": 1, "mailboxDepth": 0}

            detail = (await d.client.get("/internal/agents/u-1/busy", headers=KEY)).json()
            assert detail["actor"]["concurrencyLimit"] == 1
            [running] = detail["actor"]["inFlight"]
            assert running["elapsedSeconds"] >= 0
            assert sorted([running["missionId"], *detail["actor"]["waiting"]]) == ["m-running", "m-waiting"]
            waiting = detail["actor"]["waiting"][0]
            assert detail["agent"]["policy"]["deniedTools"] == ["create_task"]
            assert detail["tokens24h"]["reservations"] == 0 and detail["tokens24h"]["budget"] is None
            assert [(x["missionId"], x["attempts"], x["lastError"]) for x in detail["deadSlots"]] == [
                ("m-dead-busy", 5, "boom")]

            thrifty = (await d.client.get("/internal/agents/u-1/thrifty", headers=KEY)).json()
            assert thrifty["tokens24h"] | {"reservations": 0} == {
                "used": 20, "settled": 20, "reservations": 0, "budget": 10, "remaining": 0}
            assert thrifty["recentOutcomes"][0]["outcome"] == "skipped-budget"


            missions = (await d.client.get("/internal/missions/u-1", headers=KEY)).json()
            reasons = {m["missionId"]: m["reason"] for m in missions["missions"]}
            nursery.cancel_scope.cancel()
    assert reasons.pop(running["missionId"]) == "running"
    assert reasons.pop(waiting) == "waiting-for-slot"
    assert reasons == {
        "m-agent-paused": "agent-paused", "m-over-budget": "over-budget", "m-planned": "planned", "m-dead": "dead", "m-dead-busy": "dead", "m-backoff": "backing-off",
        "m-leased": "leased", "m-future": "in-the-future", "m-inactive": "not-active", "m-no-next": "no-next-run",
    }
    by_id = {m["missionId"]: m for m in missions["missions"]}
    assert by_id["m-dead"]["run"]["attempts"] == 5 and by_id["m-dead"]["due"] is False
    assert "other-instance" in by_id["m-leased"]["detail"]


async def test_missions_name_the_user_and_deployment_caps(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1"), "created_at": PAST}, {**mission("m2", user="u-2"), "created_at": PAST})
    await fetch(pool, "INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, status, prompt_tokens)"
                      " VALUES ('u-1', 'a1', 'earlier', 'used', 120), ('u-2', 'b1', 'earlier', 'used', 30)"
                      " RETURNING id")
    async with running_daemon(pool, user_max_tokens_per_day=100, max_tokens_per_day=150) as d:
        stats = (await d.client.post("/internal/tick", headers=KEY)).json()
        assert (stats["dueMissionCount"], stats["plansProduced"]) == (2, 0)  # both held back, no LLM call
        [m2] = (await d.client.get("/internal/missions/u-2", headers=KEY)).json()["missions"]
        health = (await d.client.get("/health")).json()
    assert (m2["reason"], m2["due"]) == ("over-global-budget", False)
    assert "150 of 150" in m2["detail"] and "MANA_AI_MAX_TOKENS_PER_DAY" in m2["detail"]
    assert health["tokenBudget"] == {"maxTokensPerDay": 150, "used24h": 150, "paused": True}
    async with running_daemon(pool, user_max_tokens_per_day=100, max_tokens_per_day=1000) as d:
        [m1] = (await d.client.get("/internal/missions/u-1", headers=KEY)).json()["missions"]
        [m2] = (await d.client.get("/internal/missions/u-2", headers=KEY)).json()["missions"]
    assert (m1["reason"], m1["due"]) == ("over-user-budget", False)
    assert "120 of 100" in m1["detail"] and "MANA_AI_USER_MAX_TOKENS_PER_DAY" in m1["detail"]
    assert m2["reason"] == "due"
