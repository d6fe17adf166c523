"""Every write-back item stands alone in its batch, and a batch locks the run ledger in key order."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import asyncpg
import pytest
import trio
import trio.testing
from trio_asyncio import aio_as_trio, trio_as_aio

from actors.snapshot import SnapshotActor
from daemon import daemon_settings
from planning import ledger, written_rows
from seed import fetch, insert_rows, mission
from store.due import list_due_missions
from store.group_commit import GroupCommit
from store.runs import Claim, claim_runs
from observability.metrics import WRITE_BACK_REFUSED_REASONS, Metrics
from planner.storable import (BAD_UNICODE, NUMBER_OUT_OF_RANGE, ROW_TOO_LARGE, STRING_TOO_LONG, TOO_DEEP, RowBounds,
                              stored_size)
from store.sql import Q
from store.errors import RowRefused
from store.writeback import (Provenance, Verdict, WriteBack, WriteRequest, Written, fast_item, row_problem, settle,
                             write_back_carefully, write_backs_fast, write_batch)

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
        refused = outcomes[mission_id]
        assert isinstance(refused, RowRefused) and refused.reason == "bad-unicode", refused
        assert (await ledger(pool, mission_id))[0]["status"] == "running"  # its run decides what happens
    assert (writer.round_trips, writer.items) == (1, 4)  # the refused items were never sent


async def test_a_batch_that_fails_for_its_data_is_sent_again_item_by_item(pool: asyncpg.Pool) -> None:
    """The second line of defence: items that were never checked (`write_batch` takes them as
    they are) still fail alone; the `jsonb` cast refuses the whole statement first."""
    claims = await _claims(pool, *[mission(f"m{i}", user=f"u-{i}") for i in range(4)])
    requests = [_request(claims["m3"]), _request(claims["m0"], "a\u0000b"), _request(claims["m2"]),
                _request(claims["m1"], "\udfff")]
    with pytest.raises(asyncpg.DataError):  # what used to fail every item of the batch
        await write_backs_fast(pool, requests)
    answers = await write_batch(pool, requests)
    assert [type(a).__name__ for a in answers] == ["Verdict", "UntranslatableCharacterError", "Verdict",
                                                   "InvalidTextRepresentationError"]
    assert [a.kind for a in answers if isinstance(a, Verdict)] == ["written", "written"]
    assert sorted(r["record_id"] for r in await written_rows(pool)) == ["m2", "m3"]


async def test_a_connection_failure_still_fails_the_whole_batch(pool: asyncpg.Pool) -> None:
    claims = await _claims(pool, mission("m0"), mission("m1", user="u-2"))
    requests = [_request(claims["m0"]), _request(claims["m1"])]
    await fetch(pool, "ALTER FUNCTION mana_ai.write_backs(jsonb, text) RENAME TO write_backs_away")
    with pytest.raises(asyncpg.UndefinedFunctionError):  # not the data's fault: no item-by-item retry
        await write_batch(pool, requests)
    await fetch(pool, "ALTER FUNCTION mana_ai.write_backs_away(jsonb, text) RENAME TO write_backs")
    assert await written_rows(pool) == []


async def test_a_row_past_the_row_bound_is_measured_where_it_is_built_and_refused(pool: asyncpg.Pool) -> None:
    old = [{"id": f"it-{i}", "summary": "x" * 5000} for i in range(12)]
    claims = await _claims(pool, mission("big", iterations=old), mission("small", user="u-2"))
    bounds = RowBounds(max_row_bytes=65_536)
    big, small = _request(claims["big"], "y" * 6000), _request(claims["small"], "y" * 6000)
    verdicts = await write_backs_fast(pool, [big, small], bounds=bounds)
    assert [v.kind for v in verdicts] == ["too-large", "written"]
    [row] = await written_rows(pool)
    # measured as the refresh measures what it reads
    [size] = await fetch(pool, "SELECT octet_length(data::text) + octet_length(field_timestamps::text) AS n "
                               "FROM sync_changes WHERE client_id = 'mana-ai-runner'")
    expected = row_problem(row["data"], row["field_timestamps"], RowBounds(max_row_bytes=size["n"] - 1))
    assert expected is not None and expected.detail == f"{size['n']} bytes > {size['n'] - 1}"
    assert row_problem(row["data"], row["field_timestamps"], RowBounds(max_row_bytes=size["n"])) is None
    assert int(verdicts[0].error_code or 0) > 65_536
    with pytest.raises(RowRefused) as refused:
        await settle(pool, big, verdicts[0], bounds=bounds)
    assert refused.value.reason == "row-too-large" and "65536 (MANA_AI_MAX_ROW_BYTES)" in str(refused.value)
    with pytest.raises(RowRefused) as careful:  # the careful path measures the same row the same way
        await write_back_carefully(pool, big.claim, big.write, PROVENANCE, bounds=bounds)
    assert careful.value.reason == "row-too-large"
    assert (await ledger(pool, "big"))[0]["status"] == "running" and len(await written_rows(pool)) == 1


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


TRICKY: list[Any] = [
    None, True, False, 0, -0.0, 0.0, 1.0, -2.5, 1e-07, 1.5e-300, 1e16, 1.7976931348623157e308, 123456789012345678901,
    -(2**63), 0.1, 5e-324, "", "é✓ \u2028", "\x01\x1f\x7f", '"\\/\b\f\n\r\t', "𝄞", [], {}, [[[]]],
    {"b": 1, "a": [1, 2, {"c": None}], "": ""}, {"aa": 1, "b": 2, "a": 3}, ["x", 1.25, {"k": [True, False]}],
]


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.randint(-(10**20), 10**20)
    if kind == 2:
        return rng.choice([rng.uniform(-1e6, 1e6), rng.random() * 10 ** rng.randint(-320, 300), float(rng.randint(0, 9))])
    if kind in (3, 4):
        return "".join(chr(rng.choice([rng.randint(1, 0x7f), rng.randint(0x80, 0xd7ff), rng.randint(0xe000, 0x10ffff)]))
                       for _ in range(rng.randint(0, 12)))
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {f"k{rng.randint(0, 9)}": _random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


async def test_the_size_of_a_value_is_what_postgres_prints(pool: asyncpg.Pool) -> None:
    """`stored_size` is `octet_length(value::jsonb::text)` for any JSON value (the row bound of
    the careful path and of the parser rests on it)."""
    rng = random.Random(17)
    values = TRICKY + [_random_json(rng) for _ in range(400)]
    rows = await fetch(pool, "SELECT octet_length(v::text) AS n FROM jsonb_array_elements($1::jsonb) "
                             "WITH ORDINALITY AS t(v, i) ORDER BY i", values)
    assert [r["n"] for r in rows] == [stored_size(v, RowBounds()) for v in values]


async def test_items_of_the_previous_release_are_written_as_before(pool: asyncpg.Pool) -> None:
    """A replica still running the previous release sends items without `max_row_bytes` to the
    same function (a rolling deploy): they are written unmeasured, as they were."""
    old = [{"id": f"it-{i}", "summary": "x" * 5000} for i in range(12)]
    claims = await _claims(pool, mission("big", iterations=old))
    item = fast_item(_request(claims["big"], "y" * 6000))
    del item["max_row_bytes"]
    [row] = await fetch(pool, Q["write_backs"], [item], "v0.6")
    assert (row["verdict"], row["iteration_count"]) == ("written", 13)


def test_the_refused_reasons_are_the_storable_ones() -> None:
    assert WRITE_BACK_REFUSED_REASONS == (ROW_TOO_LARGE, TOO_DEEP, STRING_TOO_LONG, NUMBER_OUT_OF_RANGE, BAD_UNICODE)
