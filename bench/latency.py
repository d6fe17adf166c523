"""Due-to-written latency: from a due mission row landing in sync_changes to its write-back row.

    python bench/latency.py [--samples 10] [--latency-ms 200]

The whole daemon runs in this process with TICK_INTERVAL_MS=60000 and NOTIFY on, against a
stand-in LLM process of the given latency. Two paths are measured, one sample at a time:
  notify     a mission that is due at once is inserted (the NOTIFY trigger wakes a cycle)
  due-timer  a mission whose nextRunAt is 1.5 s ahead is inserted; latency counts from nextRunAt
Prints JSON; the target is at most 1 s plus the LLM time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402
import trio  # noqa: E402
from store.bridge import open_asyncio_bridge  # noqa: E402
from trio_asyncio import aio_as_trio  # noqa: E402

from bench._harness import fresh_database, postgres, stand_in_llm  # noqa: E402
from observability.metrics import Metrics  # noqa: E402
from planner import iso_ms  # noqa: E402
from settings import Settings  # noqa: E402
from store.pool import close_pool, connect_with_retry  # noqa: E402
from supervisor import run_daemon  # noqa: E402


async def _insert_mission(pool: asyncpg.Pool, mission_id: str, next_run_at: str) -> None:
    data = {"id": mission_id, "title": "Latency", "objective": "Plan", "conceptMarkdown": "", "inputs": [],
            "iterations": [], "state": "active", "nextRunAt": next_run_at}
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id)"
                           " VALUES ('ai', 'aiMissions', $1, 'user-1', 'insert', $2::text::jsonb, 'device')",
                           mission_id, json.dumps(data))


async def _written(pool: asyncpg.Pool, mission_id: str) -> bool:
    async with pool.acquire() as conn:
        return bool(await conn.fetchval("SELECT count(*) FROM sync_changes WHERE record_id = $1"
                                        " AND client_id = 'mana-ai-runner'", mission_id))


async def wait_written(pool: asyncpg.Pool, mission_id: str) -> float:
    with trio.fail_after(30):
        while not await aio_as_trio(_written)(pool, mission_id):
            await trio.sleep(0.005)
    return time.time()


async def measure(pool: asyncpg.Pool, samples: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"notify": [], "due-timer": []}
    for i in range(samples):
        started = time.time()
        await aio_as_trio(_insert_mission)(pool, f"notify-{i}", "2026-01-01T00:00:00.000Z")
        results["notify"].append(await wait_written(pool, f"notify-{i}") - started)
        due = datetime.now(timezone.utc) + timedelta(seconds=1.5)
        await aio_as_trio(_insert_mission)(pool, f"timer-{i}", iso_ms(due))
        results["due-timer"].append(await wait_written(pool, f"timer-{i}") - due.timestamp())
    return results


async def main(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    with postgres() as admin_dsn:
        async with open_asyncio_bridge():
            dsn = await fresh_database(admin_dsn, "bench_latency")
            pool = await connect_with_retry(dsn, 10, 10)
            try:
                async with stand_in_llm(args.latency_ms) as url:
                    settings = dataclasses.replace(
                        Settings(), sync_database_url=dsn, mana_llm_url=url, tick_enabled=True,
                        tick_interval_ms=60_000, notify_setting=True, port=0, host="127.0.0.1",
                        instance_id="bench-latency")
                    shutdown = trio.Event()
                    async with trio.open_nursery() as nursery:
                        await nursery.start(lambda task_status: run_daemon(
                            settings, pool, Metrics(), shutdown, listen_dsn=dsn, task_status=task_status))
                        await trio.sleep(0.5)  # the first cycle, at start
                        results = await measure(pool, args.samples)
                        shutdown.set()
            finally:
                await close_pool(pool)
    llm_s = args.latency_ms / 1000
    out: dict[str, Any] = {"samples": args.samples, "llm_latency_ms": args.latency_ms,
                           "tick_interval_ms": 60_000}
    for path, values in results.items():
        out[path] = {"p50_s": round(statistics.median(values), 3), "max_s": round(max(values), 3),
                     "max_minus_llm_s": round(max(values) - llm_s, 3)}
    out["target_met"] = all(out[p]["max_minus_llm_s"] <= 1.0 for p in results)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--latency-ms", type=float, default=200)
    print(json.dumps(trio.run(main, parser.parse_args()), indent=2))
