"""Scale: 10,000 missions over 1,000 agents — first cycle, idle cycles, memory.

    python bench/scale.py [--missions 10000] [--agents 1000]

One process and one Postgres. All missions are due: cycles fold every row, then claim and
plan every mission (MANA_AI_DISPATCH_LIMIT per cycle) against a zero-latency stand-in LLM
(another process) and write every row back. Then cycles with no new rows and nothing due run
back to back. Prints JSON: the catch-up's duration, idle-cycle p50/max (target: ≤ 10 ms, O(1) queries), database transactions
per idle cycle, and this process's peak RSS (target: ≤ 150 MiB).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402
import psutil  # type: ignore[import-untyped]  # noqa: E402
import trio  # noqa: E402
from store.bridge import open_asyncio_bridge  # noqa: E402
from trio_asyncio import aio_as_trio  # noqa: E402

from bench._harness import fresh_database, postgres, seed_missions, stand_in_llm  # noqa: E402
from observability.metrics import Metrics  # noqa: E402
from settings import Settings  # noqa: E402
from store.pool import close_pool, connect_with_retry  # noqa: E402
from runtime import open_runtime  # noqa: E402


async def _transactions(pool: asyncpg.Pool) -> int:
    await asyncio.sleep(1.2)  # backends flush their statistics at most once a second
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        value: int = await conn.fetchval("SELECT xact_commit + xact_rollback FROM pg_stat_database"
                                         " WHERE datname = current_database()")
        return value


async def sample_rss(peak: list[int]) -> None:
    me = psutil.Process()
    while True:
        peak[0] = max(peak[0], me.memory_info().rss)
        await trio.sleep(0.05)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    peak = [0]
    with postgres() as admin_dsn:
        async with open_asyncio_bridge(), trio.open_nursery() as sampler:
            sampler.start_soon(sample_rss, peak)
            dsn = await fresh_database(admin_dsn, "bench_scale")
            pool = await connect_with_retry(dsn, 10, 10)
            try:
                await seed_missions(pool, args.missions, args.agents, users=max(1, args.agents // 10))
                async with stand_in_llm(0) as url:
                    settings = dataclasses.replace(Settings(), sync_database_url=dsn, mana_llm_url=url,
                                                   tick_enabled=False, snapshot_lag_ms=0, instance_id="bench-scale")
                    async with open_runtime(settings, pool, Metrics()) as runtime:
                        started = time.perf_counter()
                        planned = cycles = errors = 0
                        while planned < args.missions:  # MANA_AI_DISPATCH_LIMIT missions per cycle
                            stats = await runtime.snapshots.run_cycle()
                            planned, cycles, errors = planned + stats.plans_written_back, cycles + 1, errors + len(stats.errors)
                            if stats.due_mission_count == 0:
                                break
                        first_s = time.perf_counter() - started
                        await runtime.snapshots.run_cycle()  # folds our own write-back rows
                        idle_ms = []
                        before = await aio_as_trio(_transactions)(pool)
                        for _ in range(args.idle_cycles):
                            started = time.perf_counter()
                            stats = await runtime.snapshots.run_cycle()
                            idle_ms.append((time.perf_counter() - started) * 1000)
                            assert stats.due_mission_count == 0, stats
                        after = await aio_as_trio(_transactions)(pool)
            finally:
                await close_pool(pool)
            sampler.cancel_scope.cancel()
    return {
        "missions": args.missions, "agents": args.agents,
        "catch_up": {"seconds": round(first_s, 2), "cycles": cycles, "planned": planned, "errors": errors,
                     "per_mission_ms": round(first_s / args.missions * 1000, 3)},
        "idle_cycle_ms": {"p50": round(statistics.median(idle_ms), 2), "max": round(max(idle_ms), 2)},
        # transactions per idle cycle: 2 refresh units + due query + ledger gauges + next wake
        # (each one round trip or a few), whatever the number of missions
        "db_transactions_per_idle_cycle": round((after - before - 1) / args.idle_cycles, 1),
        "peak_rss_mib": round(peak[0] / 2**20, 1),
        "targets": {"idle cycle p50 <= 10 ms": statistics.median(idle_ms) <= 10,
                    "peak RSS <= 150 MiB": peak[0] / 2**20 <= 150},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--missions", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=1_000)
    parser.add_argument("--idle-cycles", type=int, default=20)
    print(json.dumps(trio.run(main, parser.parse_args()), indent=2))
