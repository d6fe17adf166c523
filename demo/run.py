"""The demo's script: seed, plan one cycle, print what happened."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

import asyncpg
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from trio_asyncio import aio_as_trio

from actors.explain import explain_missions
from demo.seeds import AGENTS, MASTER_KEY, MISSIONS, NOTE_DERIVATION, PLANS, USER, WEEKLY_REVIEW, notes
from demo.stand_in_llm import stand_in_app
from grants.derive import mint_grant
from http_api.server import hypercorn_config, serve_http
from observability.metrics import Metrics
from planner import make_user_actor
from runtime import open_runtime
from settings import Settings
from store.inspect import user_missions
from store.migrate import migrate
from store.pool import open_pool


async def _seed(pool: asyncpg.Pool, now: datetime, grant: dict[str, object]) -> None:
    missions = [m.record(now, grant if m.id == WEEKLY_REVIEW else None) for m in MISSIONS]
    rows = ([("ai", "agents", a) for a in AGENTS] + [("ai", "aiMissions", m) for m in missions]
            + [("notes", "notes", n) for n in notes()])
    async with pool.acquire() as conn, conn.transaction():
        for app_id, table, data in rows:
            await conn.execute(
                "INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id, actor)"
                " VALUES ($1, $2, $3, $4, 'insert', $5, 'demo-device', $6)",
                app_id, table, data["id"], USER, {**data, "userId": USER}, make_user_actor(USER, "Demo user"))


async def _audit(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch("SELECT record_id, status, reason FROM mana_ai.decrypt_audit ORDER BY record_id"))


async def _written(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch("SELECT record_id, data, actor FROM sync_changes"
                                     " WHERE client_id = 'mana-ai-runner' ORDER BY created_at, record_id"))


def _say(text: str = "") -> None:
    print(text, flush=True)


def _introduce(llm_url: str) -> None:
    agents = ", ".join(f"{a['name']} ({a['state']})" for a in AGENTS)
    _say(f"\nSeeded for {USER}, as the webapp's devices write them to sync_changes:")
    _say(f"  {len(AGENTS)} agents    {agents}; the Researcher's policy denies create_task")
    _say(f"  {len(MISSIONS)} missions  " + ", ".join(m.title for m in MISSIONS))
    _say("  2 notes     encrypted in the browser; the grant of 'Weekly review' lets the daemon decrypt the first")
    _say(f"A stand-in LLM at {llm_url} answers each mission with a prepared plan.")
    _say("\nRunning one cycle…")


def _plan(row: asyncpg.Record) -> None:
    iteration = row["data"]["iterations"][-1]
    title = next((m.title for m in MISSIONS if m.id == row["record_id"]), row["record_id"])
    _say(f"\n{title} ({row['record_id']}), planned by {row['actor']['displayName']}: {iteration['summary']}")
    for number, step in enumerate(iteration["plan"], start=1):
        intent = step["intent"]
        _say(f"  {number}. {step['summary']}")
        _say(f"     {intent['toolName']} {json.dumps(intent['params'], ensure_ascii=False)}")
    _say(f"  iteration {iteration['id']}, {iteration['overallStatus']}")


def _cycle(stats: dict[str, Any]) -> None:
    due, planned = stats["dueMissionCount"], stats["plansProduced"]
    _say(f"\nThe cycle: {due} missions due, {planned} plans produced, {stats['plansWrittenBack']} written back, "
         f"{stats['parseFailures']} parse failures, {len(stats['errors'])} errors"
         + (f"; {due - planned} skipped (why: see the end)." if due > planned else "."))
    _say("TickStats: " + json.dumps(stats, ensure_ascii=False))


async def run_demo(settings: Settings, dsn: str) -> None:
    now = datetime.now(timezone.utc)
    async with trio.open_nursery() as nursery:
        config = hypercorn_config("127.0.0.1", 0, graceful_timeout_s=1)
        llm_url = (await nursery.start(partial(serve_http, stand_in_app(PLANS), config, trio.sleep_forever)))[0]
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # mana-ai's grant key pair
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        grant = mint_grant(key.public_key(), MASTER_KEY, NOTE_DERIVATION, issued_at=now,
                           expires_at=now + timedelta(days=7))
        settings = dataclasses.replace(settings, mana_llm_url=llm_url, tick_enabled=False, snapshot_lag_ms=0,
                                       private_key_pem=pem)
        async with open_pool(dsn, 4, 10) as pool:
            await migrate(pool, create_sync_changes=True, embedded_generation=settings.embedded_sync_schema)
            await aio_as_trio(_seed)(pool, now, grant)
            _introduce(llm_url)
            async with open_runtime(settings, pool, Metrics()) as runtime:
                stats = await runtime.snapshots.run_cycle()
            _cycle(stats.as_json())
            _say("\nPlans written back to sync_changes; each waits for the user's review in the webapp:")
            for row in await aio_as_trio(_written)(pool):
                _plan(row)
            _say("\nDecrypt audit: what the daemon decrypted for the prompts, and what it refused:")
            for entry in await aio_as_trio(_audit)(pool):
                _say(f"  {entry['record_id']:<8} {entry['status']:<16} {entry['reason'] or ''}".rstrip())
            _say("\nWhy each mission is or is not due now:")
            for v in explain_missions(USER, await user_missions(pool, USER), [], {}, {}):
                _say(f"  {v.mission.mission_id:<22} {v.verdict.reason:<14} {v.verdict.detail}")
        nursery.cancel_scope.cancel()
