"""Two daemons on one database, lease takeover and fencing, shutdown with missions in flight."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import uuid4

import asyncpg
import pytest
import trio

from fake_llm import Reply, plan_reply, running_fake_llm
from planning import CREATE_TASK, ledger, planning_runtime, written_rows
from seed import fetch, insert_rows, mission
from store.due import list_due_missions
from store.errors import LeaseLost
from store.pool import close_pool, connect_with_retry
from store.runs import claim_runs
from store.writeback import Provenance, WriteBack, write_back

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)


async def test_two_daemons_plan_each_slot_once(pool: asyncpg.Pool, db_dsn: str) -> None:
    await insert_rows(pool, *[{**mission(f"m{i:02d}", user=f"u-{i % 4}"), "created_at": PAST} for i in range(20)])
    other_pool = await connect_with_retry(db_dsn, 6, 10)
    try:
        async with running_fake_llm(Reply(body=plan_reply([CREATE_TASK]).body, delay_s=0.05)) as llm:
            async with planning_runtime(pool, llm, instance_id="A") as a, \
                    planning_runtime(other_pool, llm, instance_id="B") as b:
                async with trio.open_nursery() as nursery:
                    for runtime in (a, b, a, b):
                        nursery.start_soon(runtime.snapshots.run_cycle)
                # and once more each: nothing is left to plan
                assert (await a.snapshots.run_cycle()).due_mission_count == 0
                assert (await b.snapshots.run_cycle()).due_mission_count == 0
    finally:
        await close_pool(other_pool)
    rows = await written_rows(pool)
    assert sorted(r["record_id"] for r in rows) == [f"m{i:02d}" for i in range(20)]
    assert len(llm.requests) == 20
    owners = await fetch(pool, "SELECT count(*) AS n FROM mana_ai.mission_runs WHERE status = 'planned'")
    assert owners[0]["n"] == 20


async def test_two_daemons_refreshing_page_by_page_plan_each_slot_once(pool: asyncpg.Pool, db_dsn: str) -> None:
    """More rows than a first page: both refresh the log page by page at once (each page takes
    the cursor; the other skips it, or finds it moved and stops) and dispatch between pages."""
    n = 150
    await insert_rows(pool, *[{**mission(f"m{i:03d}", user=f"u-{i % 4}"),
                               "created_at": PAST + timedelta(milliseconds=i)} for i in range(n)])
    other_pool = await connect_with_retry(db_dsn, 6, 10)
    try:
        async with running_fake_llm(Reply(body=plan_reply([CREATE_TASK]).body, delay_s=0.01)) as llm:
            async with planning_runtime(pool, llm, instance_id="A", mailbox_size=n) as a, \
                    planning_runtime(other_pool, llm, instance_id="B", mailbox_size=n) as b:
                async with trio.open_nursery() as nursery:
                    for runtime in (a, b):
                        nursery.start_soon(runtime.snapshots.run_cycle)
                for runtime in (a, b, a):  # what one left unread, the next one folds and plans
                    await runtime.snapshots.run_cycle()
                assert (await b.snapshots.run_cycle()).due_mission_count == 0
    finally:
        await close_pool(other_pool)
    rows = await written_rows(pool)
    assert sorted(r["record_id"] for r in rows) == [f"m{i:03d}" for i in range(n)]
    assert len(llm.requests) == n
    runs = await fetch(pool, "SELECT status, attempts, count(*) AS n FROM mana_ai.mission_runs GROUP BY 1, 2")
    assert [tuple(r) for r in runs] == [("planned", 1, n)]
    snapshots = await fetch(pool, "SELECT count(*) AS n FROM mana_ai.mission_snapshots "
                                  "WHERE record = stable_record AND record->>'title' = 'Wochenreview'")
    assert snapshots[0]["n"] == n


async def test_an_expired_lease_is_taken_over_and_the_old_run_cannot_write(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1"), "created_at": PAST})
    from actors.snapshot import SnapshotActor
    from daemon import daemon_settings
    from observability.metrics import Metrics
    await SnapshotActor(pool, daemon_settings(), Metrics()).run_cycle()  # refresh only
    due = await list_due_missions(pool, "2999-01-01T00:00:00.000Z")
    [old] = await claim_runs(pool, due, instance_id="A", lease_s=0.2)
    assert await claim_runs(pool, due, instance_id="B", lease_s=30) == []  # lease still live
    await trio.sleep(0.3)
    due = await list_due_missions(pool, "2999-01-01T00:00:00.000Z")
    [new] = await claim_runs(pool, due, instance_id="B", lease_s=30)
    assert new.attempt == 2 and new.token != old.token
    iteration = {"id": str(uuid4()), "plan": []}
    provenance = Provenance("empty-plan", "m", "h", 1, 1)
    with pytest.raises(LeaseLost):
        await write_back(pool, old, WriteBack(iteration, {"kind": "ai"}, "2026-01-01T00:00:00.000Z"), provenance)
    assert await written_rows(pool) == []
    await write_back(pool, new, WriteBack(iteration, {"kind": "ai"}, "2026-01-01T00:00:00.000Z"), provenance)
    assert len(await written_rows(pool)) == 1
    [run] = await ledger(pool, "m1")
    assert run["status"] == "planned"


async def test_shutdown_hands_in_flight_claims_back(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1"), "created_at": PAST})
    async with running_fake_llm(Reply(hang=True)) as llm:
        async with planning_runtime(pool, llm, grace_s=0.2) as runtime:
            await runtime.snapshots.start_cycle()
            with trio.fail_after(5):
                while llm.in_flight == 0:
                    await trio.sleep(0.01)
        # the runtime stopped: the mission was cancelled after the grace period
    [run] = await ledger(pool, "m1")
    assert (run["status"], run["attempts"], run["lease_token"]) == ("retry", 0, None)
    assert await written_rows(pool) == []


async def test_a_running_mission_renews_its_lease(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1"), "created_at": PAST})
    async with running_fake_llm(Reply(body=plan_reply([CREATE_TASK]).body, delay_s=1.6)) as llm:
        async with planning_runtime(pool, llm, lease_s=1.0) as runtime:
            batch, _ = await runtime.snapshots.start_cycle()
            with trio.fail_after(5):
                while llm.in_flight == 0:
                    await trio.sleep(0.01)
            await trio.sleep(1.2)  # past the first lease: only renewal keeps it
            due = await list_due_missions(pool, "2999-01-01T00:00:00.000Z")
            assert due == []  # a live lease: not due for anyone
            stats = await batch.wait()
    assert stats.plans_written_back == 1
    [run] = await ledger(pool, "m1")
    assert run["status"] == "planned" and run["attempts"] == 1
