"""The demo's script: seed, plan one cycle, print what happened."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

import asyncpg
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from trio_asyncio import aio_as_trio

from actors.explain import Situation, explain
from demo.stand_in_llm import stand_in_app
from grants.cipher import encrypt_value
from grants.derive import Derivation, derive_mdk, mint_grant
from http_api.server import hypercorn_config, serve_http
from observability.metrics import Metrics
from planner import iso_ms
from runtime import open_runtime
from settings import Settings
from store.inspect import user_missions
from store.migrate import migrate
from store.pool import open_pool

USER = "demo-user"
PAST = "2026-01-01T00:00:00.000Z"


def _agents() -> list[dict[str, Any]]:
    return [
        {"id": "agent-recherche", "name": "Recherche", "role": "Sucht und sammelt", "state": "active",
         "maxConcurrentMissions": 1, "maxTokensPerDay": 50_000,
         "policy": {"tools": {"create_task": "deny"}, "defaultForAi": "propose"}},
        {"id": "agent-pause", "name": "Ruhepause", "role": "Macht Pause", "state": "paused",
         "maxConcurrentMissions": 1, "policy": {"tools": {}, "defaultForAi": "propose"}},
    ]


MASTER_KEY = bytes(range(1, 33))  # the user's vault key, as mana-auth would hold it
NOTE_DERIVATION = Derivation("mission-wochenreview", ("notes",), ("notes:note-1",))


def _missions(now: datetime, grant: dict[str, object]) -> list[dict[str, Any]]:
    base = {"conceptMarkdown": "# Konzept\nDemo.", "inputs": [], "iterations": [], "state": "active",
            "cadence": {"kind": "interval", "everyMinutes": 60}}
    return [
        {**base, "id": "mission-wochenreview", "title": "Wochenreview", "objective": "Review progress",
         "nextRunAt": PAST, "grant": grant, "inputs": [{"module": "notes", "table": "notes", "id": "note-1"},
                                                        {"module": "notes", "table": "notes", "id": "note-2"}]},
        {**base, "id": "mission-newsletter", "title": "Newsletter sichten", "objective": "Neues finden",
         "nextRunAt": PAST, "agentId": "agent-recherche"},
        {**base, "id": "mission-steuer", "title": "Steuer vorbereiten", "objective": "Belege sammeln",
         "nextRunAt": PAST, "agentId": "agent-recherche"},
        {**base, "id": "mission-urlaub", "title": "Urlaub planen", "objective": "Ziele vergleichen",
         "nextRunAt": PAST, "agentId": "agent-pause"},
        {**base, "id": "mission-spaeter", "title": "Später", "objective": "Noch nicht",
         "nextRunAt": iso_ms(now + timedelta(days=1))},
    ]


def _notes() -> list[dict[str, Any]]:
    """Two notes encrypted in the browser; the grant covers only the first."""
    mdk = derive_mdk(MASTER_KEY, NOTE_DERIVATION)
    return [{"id": f"note-{i}", "title": encrypt_value(mdk, title, os.urandom(12)),
             "content": encrypt_value(mdk, content, os.urandom(12))}
            for i, (title, content) in enumerate([("Strategie", "Mutig sein, früh liefern."),
                                                  ("Privat", "Nicht freigegeben.")], start=1)]


async def _seed(pool: asyncpg.Pool, now: datetime, grant: dict[str, object]) -> None:
    rows = ([("ai", "agents", a) for a in _agents()] + [("ai", "aiMissions", m) for m in _missions(now, grant)]
            + [("notes", "notes", n) for n in _notes()])
    async with pool.acquire() as conn, conn.transaction():
        for app_id, table, data in rows:
            await conn.execute(
                "INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id, actor)"
                " VALUES ($1, $2, $3, $4, 'insert', $5, 'demo-device', $6)",
                app_id, table, data["id"], USER, {**data, "userId": USER},
                {"kind": "user", "principalId": USER, "displayName": "Du"})


async def _audit(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch("SELECT record_id, status, reason FROM mana_ai.decrypt_audit ORDER BY record_id"))


async def _written(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch("SELECT record_id, data, actor FROM sync_changes"
                                     " WHERE client_id = 'mana-ai-runner' ORDER BY created_at, record_id"))


def _say(text: str = "") -> None:
    print(text, flush=True)


async def run_demo(settings: Settings, dsn: str) -> None:
    now = datetime.now(timezone.utc)
    async with trio.open_nursery() as nursery:
        config = hypercorn_config("127.0.0.1", 0, graceful_timeout_s=1)
        llm_url = (await nursery.start(partial(serve_http, stand_in_app(), config, trio.sleep_forever)))[0]
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
            _say(f"Seeded {len(_agents())} agents, {len(_missions(now, grant))} missions and 2 encrypted notes"
                 f" for {USER} into sync_changes; 'Wochenreview' holds a key grant for the first note.")
            _say(f"Stand-in LLM at {llm_url}. Running one cycle…\n")
            async with open_runtime(settings, pool, Metrics()) as runtime:
                stats = await runtime.snapshots.run_cycle()
            _say("TickStats: " + json.dumps(stats.as_json(), ensure_ascii=False))
            for row in await aio_as_trio(_written)(pool):
                new = row["data"]["iterations"][-1]
                _say(f"\n{row['record_id']}: iteration {new['id']} ({new['overallStatus']}) "
                     f"by {row['actor']['displayName']} — {new['summary']}")
                for step in new["plan"]:
                    intent = step["intent"]
                    _say(f"  - [{step['status']}] {intent['toolName']} {json.dumps(intent['params'], ensure_ascii=False)}")
            _say("\nDecrypt audit:")
            for entry in await aio_as_trio(_audit)(pool):
                _say(f"  {entry['record_id']:<8} {entry['status']:<16} {entry['reason'] or ''}")
            _say("\nWhy each mission is or is not due now:")
            found = await user_missions(pool, USER)
            assert found.db_now is not None
            for m in found.missions:
                agent_id = m.record.get("agentId")
                agent = found.agents.get((USER, agent_id)) if isinstance(agent_id, str) else None
                verdict = explain(Situation(m.record, m.tombstone, m.run, agent, iso_ms(found.db_now), found.db_now,
                                            None, False, False))
                _say(f"  {m.mission_id:<22} {verdict.reason:<14} {verdict.detail}")
        nursery.cancel_scope.cancel()
