"""Dead slots across users: the keyset-paged list and bulk retry/discard on a real Postgres.

A bulk action touches only open dead slots of its scope (another user's, another agent's, and
running, retrying, planned or discarded slots are left as they were), goes in batches that each
commit on their own, and a lock held on another user's slot does not hold it up.
"""

from __future__ import annotations

import asyncpg
import pytest
import trio
from trio_asyncio import aio_as_trio

from dead_seed import DEAD, DISCARDED, RETRIED, SLOT, mixed, seed, states
from seed import fetch
from store.dead_slots import (
    START, BulkResult, DeadSlotScope, count_dead_slots, dead_slots_page, dead_slots_per_user, recover_dead_slots,
)
from store.errors import StoreError
from store.sql import Q

OLD = "2026-04-14T09:00:00.000Z"


async def test_a_user_scope_leaves_other_users_and_slots_that_are_not_dead(pool: asyncpg.Pool) -> None:
    await seed(pool, mixed())
    before = await states(pool)
    result = await recover_dead_slots(pool, BulkResult("retry", DeadSlotScope("u-a")))
    assert (result.changed, result.superseded, result.complete) == (4, 0, True)
    after = await states(pool)
    assert {k for k, v in after.items() if v != before[k]} == {("u-a", m) for m in ("m1", "m2", "m3", "m4")}
    assert all(after[("u-a", m)] == RETRIED for m in ("m1", "m2", "m3", "m4"))
    assert after[("u-b", "m1")] == after[("u-b", "m2")] == DEAD


async def test_an_agent_scope_leaves_the_users_other_agents_and_other_users_agents_of_that_name(
        pool: asyncpg.Pool) -> None:
    await seed(pool, mixed())
    before = await states(pool)
    result = await recover_dead_slots(pool, BulkResult("discard", DeadSlotScope("u-a", "a1")))
    assert (result.changed, result.complete) == (2, True)
    after = await states(pool)
    assert {k for k, v in after.items() if v != before[k]} == {("u-a", "m1"), ("u-a", "m2")}
    assert after[("u-a", "m1")] == DISCARDED and after[("u-b", "m1")] == DEAD  # u-b has an "a1" too


async def test_all_touches_only_dead_slots_and_discarded_ones_stay_discarded(pool: asyncpg.Pool) -> None:
    await seed(pool, mixed())
    await recover_dead_slots(pool, BulkResult("discard", DeadSlotScope("u-b", "a9")))
    before = await states(pool)
    result = await recover_dead_slots(pool, BulkResult("retry", DeadSlotScope()))
    assert result.changed == 5  # u-a's four, u-b's m1; u-b's m2 was discarded
    after = await states(pool)
    for key in [("u-a", "m5"), ("u-a", "m6"), ("u-a", "m7"), ("u-b", "m2")]:
        assert after[key] == before[key], key
    running = await fetch(pool, "SELECT lease_owner, attempts FROM mana_ai.mission_runs WHERE status = 'running'")
    assert [(r["lease_owner"], r["attempts"]) for r in running] == [("other", 5)]


async def test_a_retry_leaves_superseded_slots_dead_and_counts_them(pool: asyncpg.Pool) -> None:
    await seed(pool, [("u-a", "m1", "a1", "dead"), ("u-a", "m2", "a1", "dead")])
    # m2 moved on to another slot after OLD died, and m1 was deleted: neither can run again
    await fetch(pool, "UPDATE mana_ai.mission_runs SET due_slot = $1 WHERE mission_id = 'm2' RETURNING 1", OLD)
    await fetch(pool, "UPDATE mana_ai.mission_snapshots SET tombstone = true WHERE mission_id = 'm1' RETURNING 1")
    result = await recover_dead_slots(pool, BulkResult("retry", DeadSlotScope("u-a")))
    assert (result.changed, result.superseded, result.complete) == (0, 2, True)
    assert {v[0] for v in (await states(pool)).values()} == {"dead"}
    assert await count_dead_slots(pool, DeadSlotScope("u-a")) == 2  # still listed: discard them
    assert (await recover_dead_slots(pool, BulkResult("discard", DeadSlotScope("u-a")))).changed == 2


async def test_two_thousand_dead_slots_go_in_batches_each_its_own_transaction(pool: asyncpg.Pool) -> None:
    await seed(pool, [("u-big", f"m{i:04d}", "a1", "dead") for i in range(2000)] + [("u-small", "m1", "a1", "dead")])
    result = await recover_dead_slots(pool, BulkResult("retry", DeadSlotScope("u-big")), batch_rows=500)
    assert (result.changed, result.batches, result.complete) == (2000, 5, True)  # the fifth finds none
    transactions = await fetch(pool, "SELECT count(DISTINCT xmin::text) AS n, count(*) AS rows"
                                     " FROM mana_ai.mission_runs WHERE user_id = 'u-big' AND status = 'retry'")
    assert (transactions[0]["n"], transactions[0]["rows"]) == (4, 2000)
    assert (await states(pool))[("u-small", "m1")] == DEAD


async def test_a_time_limit_stops_between_batches_and_a_second_call_goes_on(pool: asyncpg.Pool) -> None:
    await seed(pool, [("u-big", f"m{i:03d}", "a1", "dead") for i in range(30)])
    first = await recover_dead_slots(pool, BulkResult("discard", DeadSlotScope("u-big")), batch_rows=10, time_limit_s=0)
    assert (first.changed, first.batches, first.complete) == (10, 1, False)
    rest = await recover_dead_slots(pool, BulkResult("discard", DeadSlotScope("u-big")), batch_rows=10)
    assert (rest.changed, rest.complete) == (20, True)


async def _open(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn)


async def test_a_lock_on_another_users_slot_does_not_hold_up_a_bulk_action(aio_loop: object, pool: asyncpg.Pool,
                                                                          db_dsn: str) -> None:
    """Another session holds one of u-b's dead slots (a single retry in flight, say): a bulk action
    on u-a goes through at once; one on u-b waits for it and, past the lock timeout, fails with
    the batches before it done."""
    await seed(pool, [("u-a", "m1", "a1", "dead"), ("u-b", "m1", "a1", "dead"), ("u-b", "m2", "a1", "dead")])
    other = await aio_as_trio(_open)(db_dsn)
    try:
        await aio_as_trio(other.execute)("BEGIN")
        await aio_as_trio(other.execute)(
            "SELECT 1 FROM mana_ai.mission_runs WHERE user_id = 'u-b' AND mission_id = 'm2' FOR UPDATE")
        with trio.fail_after(5):
            done = await recover_dead_slots(pool, BulkResult("discard", DeadSlotScope("u-a")), batch_timeout_s=3)
        assert (done.changed, done.complete) == (1, True)
        with pytest.raises(StoreError, match="bulk discard"):
            await recover_dead_slots(pool, BulkResult("discard", DeadSlotScope("u-b")), batch_timeout_s=0.2)
        assert (await states(pool))[("u-b", "m1")] == DEAD  # that batch rolled back whole
    finally:
        await aio_as_trio(other.close)()


async def test_the_list_pages_by_key_and_filters_by_user_and_agent(pool: asyncpg.Pool) -> None:
    await seed(pool, mixed())
    everyone, after = [], START
    while page := await dead_slots_page(pool, DeadSlotScope(), after, 2):
        everyone.extend(page)
        after = page[-1].key
    assert [(s.user_id, s.mission_id) for s in everyone] == [
        ("u-a", "m1"), ("u-a", "m2"), ("u-a", "m3"), ("u-a", "m4"), ("u-b", "m1"), ("u-b", "m2")]
    first = everyone[0]
    assert (first.agent_id, first.attempts, first.error_kind, first.last_error, first.current) == (
        "a1", 5, "error", "mana-llm 503", True) and first.died_at is not None
    assert [s.mission_id for s in await dead_slots_page(pool, DeadSlotScope("u-a", "a1"), START, 10)] == ["m1", "m2"]
    assert [s.mission_id for s in await dead_slots_page(pool, DeadSlotScope("u-b"), ("u-b", "m1", SLOT), 10)] == ["m2"]
    assert await count_dead_slots(pool, DeadSlotScope()) == 6
    assert await count_dead_slots(pool, DeadSlotScope("u-a", "a1")) == 2
    per_user = [(r.user_id, r.agent_id, r.slots) for r in await dead_slots_per_user(pool, 10)]
    assert per_user == [("u-a", "a1", 2), ("u-a", "a2", 1), ("u-a", None, 1), ("u-b", "a1", 1), ("u-b", "a9", 1)]


async def _plan(pool: asyncpg.Pool, query: str, args: tuple[object, ...]) -> str:
    async with pool.acquire() as conn:
        return str(await conn.fetchval("EXPLAIN (FORMAT JSON) " + query, *args))


async def test_the_list_and_the_batches_read_the_dead_slot_index(pool: asyncpg.Pool) -> None:
    """Among thousands of planned and dead slots, a page of the list and a batch read the dead
    slots' index in key order: no sort of every dead slot per page or batch, no planned row read.
    (An agent's scope starts from the user's mission snapshots instead.)"""
    await seed(pool, [(f"u-{i % 4}", f"p{i:04d}", "a1", "planned") for i in range(3000)]
               + [(f"u-{i % 4}", f"d{i:04d}", "a1", "dead") for i in range(2000)])
    await fetch(pool, "ANALYZE mana_ai.mission_runs, mana_ai.mission_snapshots")
    for name, args in [("dead_slots_page_all", (*START, 10)),
                       ("dead_slots_page_of_user", ("u-1", None, *START, 10)),
                       ("retry_dead_slots_all", (*START, 500))]:
        plan = await aio_as_trio(_plan)(pool, Q[name], args)
        assert "'Index Name': 'idx_mission_runs_dead_open'" in plan, (name, plan)
        assert "'Sort Key': ['r.user_id" not in plan, (name, plan)
