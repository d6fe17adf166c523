"""`GET /internal/dead-slots` and `POST /internal/dead-slots/retry|discard` over real HTTP (the
daemon in-process): the service key, scopes that must be named, isolation between users and
agents, the counts, the log line, the gauges read at once, and a retry waking the scheduler."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import pytest
import trio

from console_seed import KEY
from daemon import SERVICE_KEY, running_daemon
from dead_seed import DEAD, DISCARDED, RETRIED, SLOT, mixed, seed, states
from fake_llm import plan_reply, running_fake_llm
from seed import fetch, insert_rows, mission


async def test_the_routes_need_the_service_key_and_change_nothing_without_it(pool: asyncpg.Pool) -> None:
    await seed(pool, mixed())
    before = await states(pool)
    async with running_daemon(pool) as d:
        assert (await d.client.get("/internal/dead-slots")).status_code == 401
        for action in ("retry", "discard"):
            for headers in ({}, {"X-Service-Key": "wrong-key"}):
                response = await d.client.post(f"/internal/dead-slots/{action}", json={"all": True}, headers=headers)
                assert response.status_code == 401, (action, headers)
    assert await states(pool) == before


@pytest.mark.parametrize("body", [
    b"", b"   ", b"{}", b"null", b"[]", b'"all"', b"{not json", b'{"all": false}', b'{"all": "true"}', b'{"all": 1}',
    b'{"all": true, "userId": "u-a"}', b'{"agentId": "a1"}', b'{"userId": ""}', b'{"userId": 7}',
    b'{"userId": "u-a\\u0000"}', b'{"userId": "\\ud800"}', b'{"userId": "u-a", "agentId": ""}',
    b'{"userid": "u-a"}', b'{"userId": "u-a", "everything": true}',
])
async def test_a_bulk_action_needs_its_scope_named(pool: asyncpg.Pool, body: bytes) -> None:
    """An empty body never means "all": only `{"all": true}` does."""
    await seed(pool, mixed())
    before = await states(pool)
    async with running_daemon(pool) as d:
        for action in ("retry", "discard"):
            response = await d.client.post(f"/internal/dead-slots/{action}", content=body,
                                           headers={**KEY, "Content-Type": "application/json"})
            assert response.status_code == 400 and "error" in response.json(), (action, body)
    assert await states(pool) == before


async def test_retry_of_one_user_leaves_the_others_and_is_logged_once(
        pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="http_api.dead_slots")
    await seed(pool, mixed())
    before = await states(pool)
    async with running_daemon(pool) as d:
        response = await d.client.post("/internal/dead-slots/retry", headers=KEY, json={"userId": "u-a"})
        assert response.status_code == 200 and response.json() == {
            "action": "retry", "scope": {"all": False, "userId": "u-a", "agentId": None},
            "retried": 4, "superseded": 0, "batches": 1, "complete": True}
        agent = await d.client.post("/internal/dead-slots/discard", headers=KEY, json={"userId": "u-b", "agentId": "a9"})
        assert agent.json() == {"action": "discard", "scope": {"all": False, "userId": "u-b", "agentId": "a9"},
                                "discarded": 1, "batches": 1, "complete": True}
    after = await states(pool)
    assert {k for k, v in after.items() if v != before[k]} == {
        ("u-a", "m1"), ("u-a", "m2"), ("u-a", "m3"), ("u-a", "m4"), ("u-b", "m2")}
    assert after[("u-a", "m1")] == RETRIED and after[("u-b", "m1")] == DEAD and after[("u-b", "m2")] == DISCARDED
    lines = [r for r in caplog.records if r.getMessage().startswith("dead_slots.")]
    assert [(r.getMessage(), r.via, r.scope_all, r.scope_user, r.scope_agent, r.slots, r.error)  # type: ignore[attr-defined]
            for r in lines] == [("dead_slots.retried", "api", False, "u-a", None, 4, None),
                                ("dead_slots.discarded", "api", False, "u-b", "a9", 1, None)]


async def test_discard_of_all_touches_every_user_but_no_slot_that_is_not_dead(pool: asyncpg.Pool) -> None:
    await seed(pool, mixed())
    before = await states(pool)
    async with running_daemon(pool) as d:
        response = await d.client.post("/internal/dead-slots/discard", headers=KEY, json={"all": True})
        assert response.json()["discarded"] == 6 and response.json()["scope"]["all"] is True
        again = await d.client.post("/internal/dead-slots/discard", headers=KEY, json={"all": True})
        assert again.json()["discarded"] == 0
        assert (await d.client.get("/internal/dead-slots", headers=KEY)).json() == {"deadSlots": [], "nextCursor": None}
    after = await states(pool)
    assert {k for k, v in after.items() if v != before[k]} == {k for k, v in before.items() if v == DEAD}
    assert {after[k] for k, v in before.items() if v == DEAD} == {DISCARDED}


async def test_two_thousand_dead_slots_of_one_user_go_in_batches(pool: asyncpg.Pool) -> None:
    await seed(pool, [("u-big", f"m{i:04d}", "a1", "dead") for i in range(2000)] + [("u-b", "m1", "a1", "dead")])
    async with running_daemon(pool) as d:
        assert d.metric("mana_ai_run_ledger_slots", status="dead") == 0  # not read yet: no cycle ran
        response = await d.client.post("/internal/dead-slots/retry", headers=KEY, json={"userId": "u-big"})
        assert response.json() == {"action": "retry", "scope": {"all": False, "userId": "u-big", "agentId": None},
                                   "retried": 2000, "superseded": 0, "batches": 5, "complete": True}
        assert d.metric("mana_ai_run_ledger_slots", status="dead") == 1  # read after the action: u-b's
    rows = await fetch(pool, "SELECT count(DISTINCT xmin::text) AS transactions FROM mana_ai.mission_runs"
                             " WHERE user_id = 'u-big' AND status = 'retry' AND attempts = 0")
    assert rows[0]["transactions"] == 4  # 500 slots each


async def test_the_list_pages_filters_and_never_shows_a_secret(pool: asyncpg.Pool) -> None:
    await seed(pool, mixed())
    await fetch(pool, "UPDATE mana_ai.mission_runs SET last_error = $1 WHERE user_id = 'u-a' AND mission_id = 'm1'"
                      " RETURNING 1", f"mana-llm 401: invalid key {SERVICE_KEY}")
    async with running_daemon(pool) as d:
        seen: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "4"}
        while True:
            page = (await d.client.get("/internal/dead-slots", headers=KEY, params=params)).json()
            seen.extend(page["deadSlots"])
            if page["nextCursor"] is None:
                break
            params["after"] = page["nextCursor"]
        assert [(s["userId"], s["missionId"]) for s in seen] == [
            ("u-a", "m1"), ("u-a", "m2"), ("u-a", "m3"), ("u-a", "m4"), ("u-b", "m1"), ("u-b", "m2")]
        first = seen[0]
        assert first | {"diedAt": None} == {
            "userId": "u-a", "agentId": "a1", "missionId": "m1", "dueSlot": SLOT, "attempts": 5,
            "errorKind": "error", "lastError": "mana-llm 401: invalid key ***", "diedAt": None, "retryable": True}
        assert first["diedAt"].endswith("Z")
        agent = (await d.client.get("/internal/dead-slots", headers=KEY, params={"user": "u-a", "agent": "a1"})).json()
        assert [s["missionId"] for s in agent["deadSlots"]] == ["m1", "m2"]
        user = (await d.client.get("/internal/dead-slots", headers=KEY, params={"user": "u-b"})).json()
        assert [s["missionId"] for s in user["deadSlots"]] == ["m1", "m2"]
        for bad in ({"agent": "a1"}, {"after": "not-a-cursor"}, {"after": "W10"}, {"after": "x" * 5000}):
            response = await d.client.get("/internal/dead-slots", headers=KEY, params=bad)
            assert response.status_code == 400, bad
        capped = (await d.client.get("/internal/dead-slots", headers=KEY, params={"limit": "100000"})).json()
        assert len(capped["deadSlots"]) == 6 and capped["nextCursor"] is None


@pytest.mark.parametrize("how", ["one", "bulk"])
async def test_a_retry_wakes_the_scheduler(pool: asyncpg.Pool, how: str) -> None:
    """With an hour between scheduled cycles, a retried slot is planned at once, not at the next
    interval: one slot's retry, and a bulk retry alike."""
    await insert_rows(pool, mission("m-dead", agent_id=None))
    await fetch(pool, "INSERT INTO mana_ai.mission_runs (user_id, mission_id, due_slot, status, attempts, finished_at)"
                      " VALUES ('u-1', 'm-dead', $1, 'dead', 5, now()) RETURNING 1", SLOT)
    asked = trio.Event()

    def answer(body: dict[str, Any]) -> Any:
        asked.set()
        return plan_reply([])

    async with running_fake_llm() as llm, running_daemon(pool, mana_llm_url=llm.url, tick_enabled=True,
                                                          tick_interval_ms=3_600_000) as d:
        llm.responder = answer
        stats = (await d.client.post("/internal/tick", headers=KEY)).json()  # folded; the slot is dead
        assert stats["dueMissionCount"] == 0 and not asked.is_set()
        if how == "one":
            response = await d.client.post("/internal/missions/u-1/m-dead/retry", headers=KEY)
        else:
            response = await d.client.post("/internal/dead-slots/retry", headers=KEY, json={"userId": "u-1"})
        assert response.status_code == 200
        with trio.fail_after(10):
            await asked.wait()
