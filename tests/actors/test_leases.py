"""Leases against a real Postgres: connection blips, two instances, one renewal per interval.

Lease lengths here are a few seconds, so these tests wait for real time to pass (the lease is
judged by Postgres' clock); each is bounded by `fail_after`.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import trio
from trio_asyncio import aio_as_trio

from conftest import PgServer
from fake_llm import FakeLlm, Reply, plan_reply, running_fake_llm
from observability.metrics import Metrics
from planning import CREATE_TASK, agent_row, ledger, planning_runtime, written_rows
from seed import fetch, insert_rows, mission
from store.pool import close_pool, connect_with_retry

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)
OBJECTIVE = re.compile(r"objective-((?:a\d-)?m\d+)")


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"service": "mana-ai", **labels}) or 0.0


def seeded(mission_id: str, **kw: Any) -> dict[str, Any]:
    """A due mission whose prompt names it (`objective-<id>`), so LLM calls can be counted per mission."""
    return {**mission(mission_id, objective=f"objective-{mission_id}", **kw), "created_at": PAST}


def calls_per_mission(llm: FakeLlm) -> Counter[str]:
    found = (OBJECTIVE.search(str(body.get("messages"))) for body in llm.requests)
    return Counter(m.group(1) for m in found if m is not None)


async def wait_in_flight(llm: FakeLlm, n: int, timeout_s: float = 10) -> None:
    with trio.fail_after(timeout_s):
        while llm.in_flight < n:
            await trio.sleep(0.01)


TERMINATE = """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE application_name = 'mana-ai' AND datname = current_database()"""


async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={"application_name": "mana-ai-test"})


async def _terminate(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(TERMINATE))


async def blip(db_dsn: str, duration_s: float, every_s: float) -> int:
    """Kill every pooled connection of the daemon (application_name 'mana-ai') on this database,
    every `every_s` for `duration_s`; returns how many were killed."""
    conn = await aio_as_trio(_connect)(db_dsn)
    killed = 0
    try:
        ends = trio.current_time() + duration_s
        while trio.current_time() < ends:
            killed += await aio_as_trio(_terminate)(conn)
            await trio.sleep(every_s)
    finally:
        await aio_as_trio(conn.close)()
    return killed


async def test_a_connection_blip_shorter_than_the_lease_costs_no_attempt(
        pool: asyncpg.Pool, db_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    """Renewals failing with ConnectionDoesNotExistError and InternalClientError ("cannot switch to
    state …") are retried; the LLM calls in flight go on (before the lease keeper: 1-6 of the six
    missions crashed per run, each using up an attempt)."""
    n = 6
    await insert_rows(pool, *[seeded(f"m{i}", user=f"u-{i}") for i in range(n)])
    metrics = Metrics()
    async with running_fake_llm(Reply(body=plan_reply([CREATE_TASK]).body, delay_s=3.5)) as llm:
        async with planning_runtime(pool, llm, metrics, lease_s=3) as runtime:
            with caplog.at_level(logging.INFO):
                batch, _ = await runtime.snapshots.start_cycle()
                await wait_in_flight(llm, n)
                # for 1.2 s (more than a renewal interval, less than the lease) every pooled
                # connection dies every 10 ms, so renewals meet dead and half-dead connections
                killed = await blip(db_dsn, 1.2, 0.01)
                with trio.fail_after(15):
                    stats = await batch.wait()
    events = Counter(r.getMessage() for r in caplog.records)
    assert killed > 0 and events["lease.renew_failed"] >= 1  # renewals did meet the blip
    assert sample(metrics, "mana_ai_lease_renewal_failures_total") == events["lease.renew_failed"]
    assert events["mission.crashed"] == 0 and events["mission.lease_lost"] == 0
    assert stats.plans_written_back == n and stats.errors == []
    assert sorted(calls_per_mission(llm).items()) == [(f"m{i}", 1) for i in range(n)]
    assert Counter(r["record_id"] for r in await written_rows(pool)) == {f"m{i}": 1 for i in range(n)}
    runs = await fetch(pool, "SELECT mission_id, status, attempts FROM mana_ai.mission_runs ORDER BY mission_id")
    assert [tuple(r) for r in runs] == [(f"m{i}", "planned", 1) for i in range(n)]
    assert sample(metrics, "mana_ai_mission_errors_total") == 0


async def test_two_instances_with_a_short_lease_call_the_llm_once_per_mission(
        pool: asyncpg.Pool, db_dsn: str) -> None:
    """Missions wait in a one-slot mailbox longer than the 3 s lease while the other instance scans.

    Before the lease keeper (renewal only while a mission ran) the eight missions cost 12 LLM
    calls: each agent's queued missions were taken over by B and then run by A as well."""
    agents, per_agent = ("a1", "a2"), 4
    ids = [f"{a}-m{i}" for a in agents for i in range(per_agent)]
    await insert_rows(pool, *[{**agent_row(a, limit=1), "created_at": PAST} for a in agents],
                      *[seeded(m, agent_id=m.split("-")[0]) for m in ids])
    other_pool = await connect_with_retry(db_dsn, 6, 10)
    try:
        async with running_fake_llm(Reply(body=plan_reply([CREATE_TASK]).body, delay_s=1.2)) as llm:
            async with planning_runtime(pool, llm, instance_id="A", lease_s=3) as a, \
                    planning_runtime(other_pool, llm, instance_id="B", lease_s=3) as b:
                batches = [(await a.snapshots.start_cycle())[0]]  # A claims all eight
                with trio.fail_after(30):
                    while len(await written_rows(pool)) < len(ids):  # meanwhile both keep scanning
                        for runtime in (b, a):
                            batches.append((await runtime.snapshots.start_cycle())[0])
                        await trio.sleep(0.25)
                    for batch in batches:
                        await batch.wait()
    finally:
        await close_pool(other_pool)
    assert Counter(r["record_id"] for r in await written_rows(pool)) == {m: 1 for m in ids}
    calls = calls_per_mission(llm)
    assert sorted(calls.items()) == [(m, 1) for m in sorted(ids)], f"LLM calls per mission: {dict(calls)}"
    runs = await fetch(pool, "SELECT status, count(*) AS n FROM mana_ai.mission_runs GROUP BY status")
    assert [tuple(r) for r in runs] == [("planned", len(ids))]


RENEWAL_LOG = """
CREATE TABLE public.renewal_log (at timestamptz NOT NULL, extended int NOT NULL);
CREATE FUNCTION public.log_renewals() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE n int;
BEGIN
  -- rows whose lease was extended by this statement: same token, still running, later expiry
  SELECT count(*) INTO n FROM new_rows nw JOIN old_rows o USING (user_id, mission_id, due_slot)
  WHERE nw.status = 'running' AND o.status = 'running' AND nw.lease_token = o.lease_token
    AND nw.lease_expires_at > o.lease_expires_at;
  IF n > 0 THEN INSERT INTO public.renewal_log VALUES (clock_timestamp(), n); END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER log_renewals AFTER UPDATE ON mana_ai.mission_runs
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION public.log_renewals();
"""


async def test_one_renewal_statement_per_interval_whatever_the_number_of_claims(
        pool: asyncpg.Pool, pg: PgServer, db_dsn: str) -> None:
    """Counted by Postgres itself (a statement trigger on the ledger): with eight claims held for
    ~2.6 s and a 1.2 s lease, one statement per 0.4 s renewing all eight (before: 41-48
    statements of one row each)."""
    n, lease_s = 8, 1.2
    await trio.to_thread.run_sync(pg.sql, RENEWAL_LOG, urlsplit(db_dsn).path.lstrip("/"))
    await insert_rows(pool, *[seeded(f"m{i}", user=f"u-{i}") for i in range(n)])
    async with running_fake_llm(Reply(body=plan_reply([CREATE_TASK]).body, delay_s=2.5)) as llm:
        async with planning_runtime(pool, llm, lease_s=lease_s) as runtime:
            batch, _ = await runtime.snapshots.start_cycle()
            await wait_in_flight(llm, n)
            started = trio.current_time()
            with trio.fail_after(10):
                stats = await batch.wait()
            elapsed = trio.current_time() - started
    assert stats.plans_written_back == n
    renewals = [r["extended"] for r in await fetch(pool, "SELECT extended FROM public.renewal_log ORDER BY at")]
    assert renewals, "no lease was renewed"
    assert len(renewals) <= math.ceil(elapsed / (lease_s / 3)) + 1, renewals
    assert max(renewals) == n, renewals  # all held claims in one statement


STEAL = """UPDATE mana_ai.mission_runs SET lease_owner = 'B', lease_token = gen_random_uuid(),
                  lease_expires_at = now() + interval '1 hour'
WHERE mission_id = $1 RETURNING lease_token"""


async def test_a_claim_lost_while_queued_never_runs(pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    """Another instance takes over a mission waiting for its agent's only slot: it is dropped when
    its turn comes, without an LLM call and without touching the other instance's claim."""
    await insert_rows(pool, {**agent_row("a1", limit=1), "created_at": PAST},
                      seeded("m1", agent_id="a1"), seeded("m2", agent_id="a1"))
    async with running_fake_llm(Reply(body=plan_reply([CREATE_TASK]).body, delay_s=1.5)) as llm:
        async with planning_runtime(pool, llm, lease_s=1.2) as runtime:
            with caplog.at_level(logging.INFO):
                batch, _ = await runtime.snapshots.start_cycle()
                await wait_in_flight(llm, 1)  # one runs, the other waits for the agent's only slot
                [running] = calls_per_mission(llm)
                [queued] = {"m1", "m2"} - {running}
                [stolen] = await fetch(pool, STEAL, queued)  # another instance took it over
                with trio.fail_after(10):
                    stats = await batch.wait()
    assert calls_per_mission(llm) == {running: 1}  # the queued one never reached the LLM
    assert stats.plans_written_back == 1
    assert stats.errors == [f"mission={queued}: lease lost to another instance; nothing written"]
    lost = [r for r in caplog.records if r.getMessage() == "mission.lease_lost"]
    assert [(r.mission, r.queued) for r in lost] == [(queued, True)]  # type: ignore[attr-defined]
    assert [r["record_id"] for r in await written_rows(pool)] == [running]
    [run] = await ledger(pool, queued)  # untouched by the instance that lost it
    assert (run["status"], run["lease_owner"], run["lease_token"], run["attempts"]) == (
        "running", "B", stolen["lease_token"], 1)


async def test_a_claim_lost_while_running_cancels_the_llm_call(pool: asyncpg.Pool) -> None:
    """As before the lease keeper: the run stops within a renewal interval and writes nothing."""
    await insert_rows(pool, seeded("m1"))
    async with running_fake_llm(Reply(hang=True)) as llm:
        async with planning_runtime(pool, llm, lease_s=1.2, llm_timeout_s=30) as runtime:
            batch, _ = await runtime.snapshots.start_cycle()
            await wait_in_flight(llm, 1)
            await fetch(pool, STEAL, "m1")
            with trio.fail_after(5):  # the keeper notices within a renewal interval (0.4 s)
                stats = await batch.wait()
            with trio.fail_after(5):
                while llm.in_flight:  # the call was cut, not left running
                    await trio.sleep(0.01)
    assert stats.errors == ["mission=m1: lease lost to another instance; nothing written"]
    assert await written_rows(pool) == []
    [run] = await ledger(pool, "m1")
    assert (run["status"], run["lease_owner"], run["attempts"]) == ("running", "B", 1)
