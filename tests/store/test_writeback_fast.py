"""The write-back's fast path (one statement for a batch) against the careful path, on real Postgres."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import asyncpg
import pytest
import trio

from actors.snapshot import SnapshotActor
from daemon import daemon_settings
from observability.metrics import Metrics
from planning import ledger, written_rows
from seed import fetch, insert_rows, mission, update
from store.due import list_due_missions
from store.errors import LeaseLost, MissionGone
from store.group_commit import GroupCommit
from store.runs import Claim, claim_runs
from store.usage import TokenUsage
from store.writeback import Provenance, WriteBack, WriteRequest, write_back, write_back_carefully, write_backs_fast

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)
NOW_ISO = "2026-11-30T12:00:00.000Z"
PROVENANCE = Provenance("planned", "gpt-4o-mini", "hash", 11, 7)
ACTOR = {"kind": "ai", "principalId": "legacy:ai-default", "displayName": "Mana"}


async def _claims(pool: asyncpg.Pool, *missions: dict[str, Any]) -> dict[str, Claim]:
    await insert_rows(pool, *[{**m, "created_at": PAST} for m in missions])
    await SnapshotActor(pool, daemon_settings(), Metrics()).run_cycle()  # refresh only (no dispatcher)
    due = await list_due_missions(pool, "2999-01-01T00:00:00.000Z")
    return {c.mission_id: c for c in await claim_runs(pool, due, instance_id="t", lease_s=60)}


def _request(claim: Claim, usage: TokenUsage | None = None) -> WriteRequest:
    iteration = {"id": str(uuid4()), "startedAt": NOW_ISO, "plan": [{"id": "x-0", "summary": "Ä ✓ \u2028"}],
                 "summary": "Plan", "overallStatus": "awaiting-review", "source": "server"}
    return WriteRequest(claim, WriteBack(iteration, {**ACTOR, "missionId": claim.mission_id}, NOW_ISO),
                        PROVENANCE, usage)


async def test_the_fast_path_writes_exactly_what_the_careful_path_writes(pool: asyncpg.Pool) -> None:
    old_iteration = {"id": "it-0", "summary": "from the device"}
    claims = await _claims(pool, mission("fast", iterations=[old_iteration]),
                           mission("careful", iterations=[old_iteration]))
    fast, careful = _request(claims["fast"]), _request(claims["careful"])
    careful = WriteRequest(careful.claim, fast.write, PROVENANCE, None)
    [verdict] = await write_backs_fast(pool, [fast])
    assert verdict.kind == "written" and verdict.written is not None and verdict.written.iterations == 2
    await write_back_carefully(pool, careful.claim, careful.write, PROVENANCE)
    rows = {r["record_id"]: r for r in await written_rows(pool)}
    assert rows["fast"]["data"] == rows["careful"]["data"]
    assert rows["fast"]["data"]["iterations"] == [old_iteration, dict(fast.write.iteration)]
    assert rows["fast"]["field_timestamps"] == rows["careful"]["field_timestamps"] == {
        "iterations": NOW_ISO, "updatedAt": NOW_ISO}
    for key in ("app_id", "table_name", "user_id", "op", "client_id", "schema_version", "actor"):
        assert rows["fast"][key] == rows["careful"][key], key
    same_bytes = await fetch(pool, "SELECT count(DISTINCT data::text) AS n FROM sync_changes "
                                   "WHERE client_id = 'mana-ai-runner'")
    assert same_bytes[0]["n"] == 1
    fast_run, careful_run = (await ledger(pool, "fast"))[0], (await ledger(pool, "careful"))[0]
    for key in ("status", "outcome", "prompt_tokens", "completion_tokens", "model", "prompt_hash",
                "snapshot_cursor", "lease_token"):
        assert fast_run[key] == careful_run[key], key
    settled = await fetch(pool, "SELECT mission_id, settled_slot FROM mana_ai.mission_snapshots ORDER BY 1")
    assert [r["settled_slot"] for r in settled] == [fast_run["due_slot"]] * 2


async def test_rows_newer_than_the_snapshot_take_the_careful_path(pool: asyncpg.Pool) -> None:
    claims = await _claims(pool, mission("m1"))
    # the device adds an iteration after the refresh: the snapshot is behind
    await insert_rows(pool, update("aiMissions", "m1", {"iterations": [{"id": "dev-1"}]}, "2026-11-30T11:00:00.000Z"))
    request = _request(claims["m1"])
    [verdict] = await write_backs_fast(pool, [request])
    assert verdict.kind == "stale" and await written_rows(pool) == []  # the fast path wrote nothing
    await write_back(pool, request.claim, request.write, PROVENANCE)  # fast, then careful
    [row] = await written_rows(pool)
    assert [it["id"] for it in row["data"]["iterations"]] == ["dev-1", request.write.iteration["id"]]


async def test_a_lost_lease_or_a_deleted_mission_writes_nothing(pool: asyncpg.Pool) -> None:
    claims = await _claims(pool, mission("lost"), mission("gone"))
    stolen = Claim(**{**claims["lost"].__dict__, "token": uuid4()})
    await insert_rows(pool, {"table_name": "aiMissions", "record_id": "gone", "user_id": "u-1", "op": "delete",
                             "data": None, "created_at": PAST + timedelta(seconds=1)})
    await SnapshotActor(pool, daemon_settings(), Metrics()).run_cycle()
    verdicts = await write_backs_fast(pool, [_request(stolen), _request(claims["gone"])])
    assert [v.kind for v in verdicts] == ["lease-lost", "gone"]
    with pytest.raises(LeaseLost):
        await write_back(pool, stolen, _request(stolen).write, PROVENANCE)
    with pytest.raises(MissionGone):
        await write_back(pool, claims["gone"], _request(claims["gone"]).write, PROVENANCE)
    assert await written_rows(pool) == []


async def test_one_failing_item_does_not_undo_the_others(pool: asyncpg.Pool) -> None:
    claims = await _claims(pool, mission("a"), mission("b"), mission("c"))
    poisoned = _request(claims["b"], TokenUsage(None, "u-1", "x" * 10, "b", "it", 2**40, 1))  # int overflow
    verdicts = await write_backs_fast(pool, [_request(claims["a"]), poisoned, _request(claims["c"])])
    assert [v.kind for v in verdicts] == ["written", "failed", "written"]
    assert verdicts[1].error_code == "22003"  # numeric_value_out_of_range
    assert sorted(r["record_id"] for r in await written_rows(pool)) == ["a", "c"]
    assert (await ledger(pool, "b"))[0]["status"] == "running"  # rolled back with its item


async def test_usage_is_recorded_with_the_write_back(pool: asyncpg.Pool) -> None:
    claims = await _claims(pool, mission("m1"))
    usage = TokenUsage(None, "u-1", "legacy:ai-default", "m1", "it-1", 11, 7)
    await write_back(pool, claims["m1"], _request(claims["m1"]).write, PROVENANCE, usage)
    [row] = await fetch(pool, "SELECT status, prompt_tokens, completion_tokens, iteration_id FROM mana_ai.token_usage")
    assert dict(row) == {"status": "used", "prompt_tokens": 11, "completion_tokens": 7, "iteration_id": "it-1"}


async def test_concurrent_write_backs_share_round_trips(pool: asyncpg.Pool) -> None:
    claims = await _claims(pool, *[mission(f"m{i:02d}", user=f"u-{i % 3}") for i in range(30)])
    writer = GroupCommit(pool)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        async with trio.open_nursery() as missions:
            for claim in claims.values():
                missions.start_soon(writer.write, _request(claim))
        writer.close()
    assert len(await written_rows(pool)) == 30 == writer.items
    assert writer.round_trips < 30 / 3, writer.round_trips  # batched while a round trip was in flight
    planned = await fetch(pool, "SELECT count(*) AS n FROM mana_ai.mission_runs WHERE status = 'planned'")
    assert planned[0]["n"] == 30


async def test_a_write_back_cancelled_while_queued_is_never_sent(pool: asyncpg.Pool) -> None:
    claims = await _claims(pool, mission("m1"))
    writer = GroupCommit(pool)
    with trio.CancelScope() as scope:  # the queue's task is not running: the item waits
        scope.cancel()
        await writer.write(_request(claims["m1"]))
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        writer.close()
    assert writer.round_trips == 0 and await written_rows(pool) == []
