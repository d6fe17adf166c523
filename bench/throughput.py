"""Planning throughput: N due missions over A agents against a stand-in LLM of latency L.

    python bench/throughput.py [--missions 200] [--agents 20] [--latency-ms 100]

Runs, in one process and one Postgres, each on a fresh database:
  sequential   MANA_AI_LLM_CONCURRENCY=1 (one mission at a time: the TypeScript service's shape)
  default      MANA_AI_LLM_CONCURRENCY=8
  wide         MANA_AI_LLM_CONCURRENCY=32 (then the agents' own one-slot limits bind)
  zero-latency the stand-in answers at once: the whole cost per mission, round trip included
A run is one cycle: refresh snapshots, claim, plan every mission, write every row back.
Prints one JSON object; ratios are against `sequential` from the same run.
The cycle runs inside this process, without the daemon's process, HTTP front and settings:
bench/daemon_bench.py measures the daemon as a user runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio  # noqa: E402
from store.bridge import open_asyncio_bridge  # noqa: E402

from bench._harness import fresh_database, llm_stats, postgres, seed_missions, stand_in_llm  # noqa: E402
from observability.metrics import Metrics  # noqa: E402
from settings import Settings  # noqa: E402
from store.pool import close_pool, connect_with_retry  # noqa: E402
from runtime import open_runtime  # noqa: E402


async def run_one(admin_dsn: str, name: str, *, missions: int, agents: int, latency_ms: float,
                  concurrency: int) -> dict[str, Any]:
    dsn = await fresh_database(admin_dsn, f"bench_{name.replace('-', '_')}")
    pool = await connect_with_retry(dsn, 12, 10)
    try:
        await seed_missions(pool, missions, agents)
        async with stand_in_llm(latency_ms) as url:
            settings = dataclasses.replace(
                Settings(), sync_database_url=dsn, mana_llm_url=url, tick_enabled=False, llm_concurrency=concurrency,
                snapshot_lag_ms=0, mailbox_size=max(32, missions), instance_id=f"bench-{name}")
            async with open_runtime(settings, pool, Metrics()) as runtime:
                started = time.perf_counter()
                stats = await runtime.snapshots.run_cycle()
                seconds = time.perf_counter() - started
            served = await llm_stats(url)
    finally:
        await close_pool(pool)
    if stats.plans_written_back != missions:
        raise SystemExit(f"{name}: planned {stats.plans_written_back}/{missions}: {stats.errors[:3]}")
    return {"name": name, "llm_concurrency": concurrency, "latency_ms": latency_ms, "seconds": round(seconds, 3),
            "missions_per_s": round(missions / seconds, 1), "per_mission_ms": round(seconds / missions * 1000, 3),
            "max_in_flight": served["max_in_flight"], "llm_requests": served["requests"]}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, Any] = {"missions": args.missions, "agents": args.agents, "cpus": os.cpu_count()}
    with postgres() as admin_dsn:
        async with open_asyncio_bridge():
            runs = {}
            for name, latency, concurrency in [("sequential", args.latency_ms, 1), ("default", args.latency_ms, 8),
                                               ("wide", args.latency_ms, 32), ("zero-latency", 0, 8)]:
                runs[name] = await run_one(admin_dsn, name, missions=args.missions, agents=args.agents,
                                           latency_ms=latency, concurrency=concurrency)
    base = runs["sequential"]["missions_per_s"]
    results["runs"] = list(runs.values())
    results["speedup_default_vs_sequential"] = round(runs["default"]["missions_per_s"] / base, 2)
    results["speedup_wide_vs_sequential"] = round(runs["wide"]["missions_per_s"] / base, 2)
    results["per_mission_ms_at_zero_latency"] = runs["zero-latency"]["per_mission_ms"]
    results["targets"] = {"default >= 7x": results["speedup_default_vs_sequential"] >= 7,
                          "wide >= 15x": results["speedup_wide_vs_sequential"] >= 15,
                          "zero-latency <= 3 ms": results["per_mission_ms_at_zero_latency"] <= 3}
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--missions", type=int, default=200)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, default=100)
    print(json.dumps(trio.run(main, parser.parse_args()), indent=2))
