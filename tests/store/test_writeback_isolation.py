"""Every write-back item stands alone in its batch, and a batch locks the run ledger in key order."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import asyncpg
import trio
import trio.testing
from trio_asyncio import aio_as_trio, trio_as_aio

from actors.snapshot import SnapshotActor
from daemon import daemon_settings
from observability.metrics import Metrics
from planning import ledger, written_rows
from seed import fetch, insert_rows, mission
from store.due import list_due_missions
from store.group_commit import GroupCommit
from store.runs import Claim, claim_runs
from store.writeback import Provenance, WriteBack, WriteRequest, Written, write_backs_fast

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)
NOW_ISO = "2026-11-30T12:00:00.000Z"
PROVENANCE = Provenance("planned", "gpt-4o-mini", "hash", 11, 7)
ACTOR = {"kind": "ai", "principalId": "legacy:ai-default", "displayName": "Mana"}


async def _claims(pool: asyncpg.Pool, *missions: dict[str, Any]) -> dict[str, Claim]:
    await insert_rows(pool, *[{**m, "created_at": PAST} for m in missions])
    await SnapshotActor(pool, daemon_settings(), Metrics()).run_cycle()  # refresh only (no dispatcher)
    due = await list_due_missions(pool, "2999-01-01T00:00:00.000Z")
    return {c.mission_id: c for c in await claim_runs(pool, due, instance_id="t", lease_s=60)}


def _request(claim: Claim, summary: str = "Task anlegen") -> WriteRequest:
    iteration = {"id": str(uuid4()), "startedAt": NOW_ISO, "finishedAt": NOW_ISO,
                 "plan": [{"id": "x-0", "summary": summary,
                           "intent": {"kind": "toolCall", "toolName": "create_task", "params": {"title": "Foo"}},
                           "status": "planned"}],
                 "summary": "Plan", "overallStatus": "awaiting-review", "source": "server"}
    return WriteRequest(claim, WriteBack(iteration, {**ACTOR, "missionId": claim.mission_id}, NOW_ISO),
                        PROVENANCE, None)


async def test_an_item_postgres_cannot_store_fails_alone_in_its_batch(pool: asyncpg.Pool) -> None:
    claims = await _claims(pool, *[mission(f"m{i}", user=f"u-{i}") for i in range(6)])
    poisoned = {"m1": "a\u0000b", "m4": "halb \ud800"}
    writer = GroupCommit(pool)
    outcomes: dict[str, Written | Exception] = {}

    async def write(mission_id: str) -> None:
        try:
            outcomes[mission_id] = await writer.write(_request(claims[mission_id], poisoned.get(mission_id, "ok")))
        except Exception as exc:  # noqa: BLE001 - what each caller sees is the point here
            outcomes[mission_id] = exc

    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as writes:
            for mission_id in claims:
                writes.start_soon(write, mission_id)
            await trio.testing.wait_all_tasks_blocked()  # all six queued before the queue runs: one batch
            await nursery.start(writer.run)
        writer.close()
    innocents = sorted(set(claims) - set(poisoned))
    assert {m: type(outcomes[m]).__name__ for m in innocents} == {m: "Written" for m in innocents}
    assert sorted(r["record_id"] for r in await written_rows(pool)) == innocents
    for mission_id in poisoned:
        assert type(outcomes[mission_id]).__name__ == "RowRefused", outcomes[mission_id]
        assert (await ledger(pool, mission_id))[0]["status"] == "running"  # its run decides what happens
    assert writer.round_trips == 1


async def _hold_run_lock(pool: asyncpg.Pool, claim: Claim, locked: trio.Event, release: trio.Event) -> None:
    """One unit: lock a slot's ledger row until `release` (a write-back of it waits)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM mana_ai.mission_runs WHERE user_id = $1 AND mission_id = $2 "
                           "AND due_slot = $3 FOR UPDATE", claim.user_id, claim.mission_id, claim.due_slot)
        locked.set()
        await trio_as_aio(release.wait)()


async def _lockable_now(pool: asyncpg.Pool, claim: Claim) -> bool:
    async with pool.acquire() as conn, conn.transaction():
        try:
            await conn.execute("SELECT 1 FROM mana_ai.mission_runs WHERE user_id = $1 AND mission_id = $2 "
                               "AND due_slot = $3 FOR UPDATE NOWAIT", claim.user_id, claim.mission_id, claim.due_slot)
        except asyncpg.LockNotAvailableError:
            return False
    return True


async def _wait_for_a_lock_wait(pool: asyncpg.Pool) -> None:
    with trio.fail_after(10):
        while not (await fetch(pool, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                     "AND datname = current_database()")):
            await trio.sleep(0.01)  # another backend's state: no event to wait for


async def test_a_batch_locks_the_run_ledger_in_primary_key_order(pool: asyncpg.Pool) -> None:
    """renew_leases and claim_runs lock (user_id, mission_id, due_slot) in key order; a batch
    sent in another order could deadlock with them."""
    claims = await _claims(pool, mission("a", user="u-1"), mission("z", user="u-2"))
    locked, release = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(aio_as_trio(_hold_run_lock), pool, claims["a"], locked, release)
        await locked.wait()
        nursery.start_soon(write_backs_fast, pool, [_request(claims["z"]), _request(claims["a"])])  # not in key order
        await _wait_for_a_lock_wait(pool)  # the batch waits for "a", first in key order ...
        z_free = await aio_as_trio(_lockable_now)(pool, claims["z"])  # ... and holds nothing after it
        release.set()
    assert z_free
    assert sorted(r["record_id"] for r in await written_rows(pool)) == ["a", "z"]
