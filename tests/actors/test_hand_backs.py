"""Hand-backs, failed cycles and usage rows against a real Postgres reached over TCP.

The pool goes through `pg_tcp_proxy`, which cuts a connection as it sends a given statement
(`drop_sent`: a blip during that statement) or as the server answers it (`drop_reply`: the
statement ran and committed, its acknowledgement is lost).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest
import trio

from fake_llm import Reply, plan_reply, running_fake_llm
from observability.metrics import Metrics
from pg_proxy import PgProxy, pg_tcp_proxy
from planning import CREATE_TASK, agent_row, planning_runtime, written_rows
from seed import fetch, insert_rows, mission, update
from store.pool import close_pool, connect_with_retry

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)


def at(minutes_ago: float = 5) -> datetime:
    return datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"service": "mana-ai", **labels}) or 0.0


@asynccontextmanager
async def proxied_pool(db_dsn: str) -> AsyncIterator[tuple[PgProxy, asyncpg.Pool]]:
    async with pg_tcp_proxy(db_dsn) as proxy:
        pool = await connect_with_retry(proxy.dsn, 6, 10)
        try:
            yield proxy, pool
        finally:
            await close_pool(pool)


async def slot(pool: asyncpg.Pool, mission_id: str) -> tuple[str, int, bool]:
    [row] = await fetch(pool, "SELECT status, attempts, lease_token IS NOT NULL AS leased "
                              "FROM mana_ai.mission_runs WHERE mission_id = $1", mission_id)
    return row["status"], row["attempts"], row["leased"]


async def test_a_hand_back_that_meets_a_database_blip_never_crashes_the_agent_actor(
        aio_loop: object, db_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    """An agent paused while one of its missions is in flight: the next cycle hands the agent's
    new mission back, and the connection dies as that release is sent. Before, the error escaped
    the actor's loop: the actor crashed and cancelled the in-flight mission (its LLM work lost)."""
    async with proxied_pool(db_dsn) as (proxy, pool):
        await insert_rows(pool, {**agent_row("a1", limit=2), "created_at": at()},
                          {**mission("m1", agent_id="a1"), "created_at": at()})
        metrics = Metrics()
        async with running_fake_llm(Reply(body=plan_reply([CREATE_TASK]).body, delay_s=1.5)) as llm:
            async with planning_runtime(pool, llm, metrics) as runtime:
                first, _ = await runtime.snapshots.start_cycle()
                with trio.fail_after(10):
                    while llm.in_flight < 1:
                        await trio.sleep(0.01)
                await insert_rows(pool, update("agents", "a1", {"state": "paused"}, "2026-04-16T00:00:00.000Z"),
                                  {**mission("m2", agent_id="a1"), "created_at": at()})
                proxy.drop_sent = b"skipped-paused"  # the release's reason: every try of it is cut
                with caplog.at_level(logging.INFO):
                    second, _ = await runtime.snapshots.start_cycle()
                    with trio.fail_after(20):
                        skipped = await second.wait()
                        planned = await first.wait()
                proxy.drop_sent = None
        assert proxy.dropped >= 1
        assert planned.plans_written_back == 1 and planned.errors == []  # the in-flight mission went on
        assert skipped.errors == []
        assert sample(metrics, "mana_ai_agent_actor_restarts_total") == 0
        assert [r["record_id"] for r in await written_rows(pool)] == ["m1"]
        # the release never arrived: the slot is left to its lease, which nobody renews any more
        assert (await slot(pool, "m2"))[0] == "running"
        assert sample(metrics, "mana_ai_ledger_write_failures_total", write="release") == 1
        failed = [r for r in caplog.records if r.getMessage() == "claim.hand_back_failed"]
        assert len(failed) == 1 and getattr(failed[0], "mission") == "m2"


async def test_a_cycle_that_fails_after_claiming_hands_its_claims_back_at_once(
        aio_loop: object, db_dsn: str) -> None:
    """The agents' load, alongside the claim, dies with its connection: the cycle fails. Before,
    its claims were never handed to anyone and waited a whole lease; now they go back at once,
    without using an attempt, and the next cycle plans them."""
    async with proxied_pool(db_dsn) as (proxy, pool):
        await insert_rows(pool, {**mission("m1"), "created_at": PAST}, {**mission("m2", user="u-2"), "created_at": PAST})
        metrics = Metrics()
        async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
            async with planning_runtime(pool, llm, metrics, lease_s=300) as runtime:
                proxy.drop_sent = b"FROM mana_ai.agent_snapshots\nWHERE user_id = ANY"
                failed, _ = await runtime.snapshots.start_cycle()
                proxy.drop_sent = None
                with trio.fail_after(10):
                    failed_stats = await failed.wait()
                assert proxy.dropped >= 1 and failed_stats.errors
                assert [await slot(pool, m) for m in ("m1", "m2")] == [("retry", 0, False)] * 2
                with trio.fail_after(10):
                    stats = await runtime.snapshots.run_cycle()
        assert stats.plans_written_back == 2 and stats.errors == []
        assert len(llm.requests) == 2
        assert [await slot(pool, m) for m in ("m1", "m2")] == [("planned", 1, False)] * 2


async def test_a_lost_acknowledgement_of_a_committed_write_back_records_the_usage_once(
        aio_loop: object, db_dsn: str) -> None:
    """The write-back commits (plan, planned slot and usage row in one statement), and its answer
    is lost with the connection. The run cannot tell it was written and records the usage of its
    LLM call on its own: before, a second row (the tokens counted twice against the budget)."""
    async with proxied_pool(db_dsn) as (proxy, pool):
        await insert_rows(pool, {**mission("m1"), "created_at": PAST})
        async with running_fake_llm(plan_reply([CREATE_TASK], prompt_tokens=11, completion_tokens=7)) as llm:
            async with planning_runtime(pool, llm) as runtime:
                proxy.drop_reply = b"written"  # the fast path's verdict for the item
                with trio.fail_after(20):
                    await runtime.snapshots.run_cycle()
                proxy.drop_reply = None
        assert proxy.dropped == 1 and len(llm.requests) == 1
        assert [r["record_id"] for r in await written_rows(pool)] == ["m1"]
        assert (await slot(pool, "m1"))[0] == "planned"
        usage = await fetch(pool, "SELECT status, prompt_tokens, completion_tokens FROM mana_ai.token_usage "
                                  "WHERE mission_id = 'm1'")
        assert [tuple(r) for r in usage] == [("used", 11, 7)]
