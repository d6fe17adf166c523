"""The daemon measured as a user runs it: its own process, asked for each cycle over HTTP.

    python bench/daemon_bench.py [--missions 200] [--agents 20] [--repeat 3]
                                 [--scenario zero-latency|wide|sequential ...] [--no-count-round-trips]
                                 [--db-pooler none|transaction|both] [--profile DIR]

bench/throughput.py calls the runtime inside its own process. Here the daemon is what an operator
starts, `python -m supervisor serve` (this checkout's code), configured by its environment; the
stand-in LLM (bench/stand_in_llm.py, listen backlog 4096) is a second process and PostgreSQL
(an embedded throwaway server on a Unix socket, or MANA_AI_BENCH_DSN) is a third. Every cycle is
asked for with `POST /internal/tick`, which answers the cycle's TickStats once every mission is
planned and written back. So the figures include what the in-process bench leaves out: the
daemon's HTTP front, its own logging and metrics, its own process and pool settings.

One repetition: a fresh migrated database, a fresh daemon (TICK_ENABLED=false,
MANA_AI_SNAPSHOT_LAG_MS=0, MANA_AI_LOG_LEVEL=warning), one tick with nothing due (the cycle a
daemon runs at start), then N due missions over A agents are inserted (A agent rows + N mission
rows) and the next tick is measured. The measured tick is still the first busy one of its process:
it opens the pool's connections beyond the first and the LLM keep-alive connections.
Scenarios (agents have one slot each, as in bench/throughput.py):

  zero-latency  N missions, A agents, LLM 0 ms, MANA_AI_LLM_CONCURRENCY=8: the whole cost per
                mission. Targets: ≤ 3 ms wall and ≤ 2.5 ms daemon CPU per mission; the first
                LLM request ≤ 50 ms after the tick request (the new rows are folded first).
  wide          N missions, A agents, LLM 100 ms, concurrency 32 (the A one-slot agents bind).
                Target: ≥ 15× one-at-a-time, i.e. the tick ≤ N × 100 ms / 15 (1.33 s at N = 200).
  sequential    N/4 missions, LLM 100 ms, concurrency 1: the one-at-a-time baseline. The
                speed-up compares wall time *per mission*, so fewer missions keep the run short.

Measured around the one tick (this process only waits meanwhile), divided by the missions it
planned; min/median/max over the repetitions. Wall time shares the machine's cores with the
stand-in, Postgres and whatever else runs; the CPU figures depend far less on that load.

  wall_ms_per_mission        tick request → answer, on this process's monotonic clock
  daemon_cpu_ms_per_mission  utime + stime of the daemon from /proc/<pid>/stat, before and after.
                             The kernel counts in 10 ms clock ticks: exact to 10 ms per tick, i.e.
                             0.05 ms per mission at N = 200 — why it is read around the whole tick
  llm_cpu_ms_per_mission     the stand-in's, likewise
  postgres_cpu_ms_per_mission the postmaster, its live children (backends, background workers)
                             and its reaped ones (cutime) — when the server runs on this machine
  first_llm_request_ms       tick request → first completion request at the stand-in (both
                             processes read CLOCK_MONOTONIC)
  daemon metrics             /metrics before and after: mana_ai_tick_duration_seconds (the cycle
                             inside the daemon), mana_ai_planner_request_duration_seconds (each
                             LLM call as the daemon waits for it) and, when the daemon has it,
                             mana_ai_stage_duration_seconds{stage} (shown only then)

Database round trips (unless --no-count-round-trips): one more repetition per scenario, untimed,
with the daemon's connections going through a counting proxy (bench/_pgwire.py) — a separate pass,
because relaying every message through this process costs time. A round trip is a message after
which the client must wait for the server: a simple Query (`Q`, e.g. asyncpg's BEGIN/COMMIT), a
Sync (`S`, the end of one extended-protocol statement: a fetch or execute with arguments, or the
prepare of a statement new to the connection), or a connection's start-up. They are counted from
the tick request to its answer, so the round trips of every mission and of the cycle around them
are in; reported per mission, in total and by statement (named as in store/queries.sql, or as
the asyncpg internals they are: the pool's reset query on each release, type introspection).

--db-pooler sets the daemon's MANA_AI_DB_POOLER: `transaction` is the setting for a transaction
pooler in front (asyncpg sends every statement unnamed: parsed again on each execution instead of
once per connection), measured here against Postgres directly, so that only the setting differs;
`both` runs the two interleaved (none, transaction, none, …: the same load on the machine for
both) and reports the second as "<scenario> pooler=transaction" beside "<scenario>".

--profile DIR runs the timed daemons under cProfile (one DIR/<instance>.prof each), to find where
the time goes; the profiler slows the daemon, so those runs' figures are not the benchmark's.

Prints one JSON object, like the other benchmarks; `targets` compares the medians.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import trio  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from trio_asyncio import aio_as_trio  # noqa: E402

from bench._daemon import SERVICE_KEY, Daemon, running_daemon  # noqa: E402
from bench._harness import StandIn, fresh_database, llm_stats, open_stand_in_llm, postgres, seed_missions  # noqa: E402
from bench._pgwire import RoundTrips, counting_pg_proxy  # noqa: E402
from bench._proc import cpu_s, is_local_process, process_tree_cpu_s  # noqa: E402
from store.bridge import open_asyncio_bridge  # noqa: E402
from store.pool import close_pool, connect_with_retry  # noqa: E402
from store.sql import Q  # noqa: E402

STAGE_FAMILY = "mana_ai_stage_duration_seconds"


@dataclass(frozen=True)
class Scenario:
    name: str
    missions: int
    agents: int
    latency_ms: float
    concurrency: int


def all_scenarios(missions: int, agents: int) -> dict[str, Scenario]:
    sequential = max(1, missions // 4)
    return {"zero-latency": Scenario("zero-latency", missions, agents, 0, 8),
            "wide": Scenario("wide", missions, agents, 100, 32),
            "sequential": Scenario("sequential", sequential, min(agents, sequential), 100, 1)}


@dataclass(frozen=True)
class Sample:
    """One measured tick."""

    wall_s: float
    daemon_cpu_s: float
    llm_cpu_s: float
    postgres_cpu_s: float | None
    first_llm_request_s: float | None
    max_in_flight: int
    metrics: dict[str, float]  # differences of /metrics samples across the tick
    round_trips: RoundTrips | None


# -- readings -------------------------------------------------------------------------------


def _sample_key(name: str, labels: dict[str, str]) -> str:
    shown = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "service")
    return f"{name}{{{shown}}}" if shown else name


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    """The `_sum` and `_count` samples of the daemon's duration histograms."""
    response = await client.get("/metrics")
    response.raise_for_status()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        if family.name.endswith("_duration_seconds"):
            for s in family.samples:
                if s.name.endswith(("_sum", "_count")):
                    values[_sample_key(s.name, s.labels)] = s.value
    return values


async def tick(client: httpx.AsyncClient, daemon: Daemon) -> dict[str, Any]:
    response = await client.post("/internal/tick", headers={"X-Service-Key": SERVICE_KEY})
    if response.status_code != 200:
        raise SystemExit(f"tick answered {response.status_code}: {response.text}\n{daemon.log_tail()}")
    body: dict[str, Any] = response.json()
    return body


def _parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def _postmaster_pid(dsn: str) -> int | None:
    """The server's postmaster when it runs on this machine (its CPU is not ours to read otherwise)."""
    conn = await asyncpg.connect(dsn)
    try:  # read while the backend lives: it exits with the connection
        backend: int = await conn.fetchval("SELECT pg_backend_pid()")
        if not is_local_process(backend, "postgres"):
            return None
        parent = _parent_pid(backend)
    finally:
        await conn.close()
    return parent if is_local_process(parent, "postgres") else None


def _cpu(daemon: Daemon, llm: StandIn, postmaster: int | None) -> tuple[float, float, float | None]:
    return cpu_s(daemon.pid), cpu_s(llm.pid), None if postmaster is None else process_tree_cpu_s(postmaster)


async def run_once(admin_dsn: str, scenario: Scenario, llm: StandIn, postmaster: int | None, workdir: Path,
                   instance: str, *, count_round_trips: bool, profile_dir: Path | None = None,
                   db_pooler: str = "none") -> Sample:
    dsn = await fresh_database(admin_dsn, "bench_daemon")
    async with AsyncExitStack() as stack:
        proxy = None
        if count_round_trips:
            proxy = await stack.enter_async_context(counting_pg_proxy(dsn, {v: k for k, v in Q.items()}))
        daemon = await stack.enter_async_context(
            running_daemon(proxy.dsn if proxy else dsn, llm.url, workdir, instance, llm_concurrency=scenario.concurrency,
                           mailbox_size=max(32, scenario.missions),  # all of an agent's missions can queue
                           profile_dir=profile_dir, db_pooler=db_pooler))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=daemon.url, timeout=600))
        first = await tick(client, daemon)  # the cycle a daemon runs at start: nothing is due yet
        if first["dueMissionCount"] or first["errors"]:
            raise SystemExit(f"{instance}: the empty tick found work or failed: {first}")
        pool = await connect_with_retry(dsn, 2, 10)  # stays open (and idle) until the readings are done
        stack.push_async_callback(close_pool, pool)
        await seed_missions(pool, scenario.missions, scenario.agents)
        await llm_stats(llm.url, reset=True)

        metrics_before = await scrape(client)
        trips_before = proxy.counts.snapshot() if proxy else None
        cpu_before = _cpu(daemon, llm, postmaster)
        started = time.monotonic()
        stats = await tick(client, daemon)
        wall_s = time.monotonic() - started
        cpu_after = _cpu(daemon, llm, postmaster)
        trips = proxy.counts.snapshot() - trips_before if proxy and trips_before else None
        metrics_after = await scrape(client)
        served = await llm_stats(llm.url)
    if stats["plansWrittenBack"] != scenario.missions or stats["errors"]:
        raise SystemExit(f"{instance}: planned {stats['plansWrittenBack']}/{scenario.missions}: {stats['errors'][:3]}")
    pg_before, pg_after = cpu_before[2], cpu_after[2]
    first_at = served["first_request_at"]
    return Sample(
        wall_s=wall_s, daemon_cpu_s=cpu_after[0] - cpu_before[0], llm_cpu_s=cpu_after[1] - cpu_before[1],
        postgres_cpu_s=None if pg_before is None or pg_after is None else pg_after - pg_before,
        first_llm_request_s=None if first_at is None else first_at - started,
        max_in_flight=int(served["max_in_flight"]),
        metrics={k: v - metrics_before.get(k, 0.0) for k, v in metrics_after.items()}, round_trips=trips)


# -- summaries ------------------------------------------------------------------------------


def spread(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    return {"min": round(min(values), digits), "median": round(statistics.median(values), digits),
            "max": round(max(values), digits)}


def per_mission_ms(samples: Sequence[Sample], missions: int, seconds: Sequence[float | None]) -> dict[str, float] | None:
    known = [s for s in seconds if s is not None]
    return spread([s / missions * 1000 for s in known]) if len(known) == len(samples) else None


def _metric_spread(samples: Sequence[Sample], key: str, divide_by: Sequence[float]) -> dict[str, float] | None:
    if not all(key in s.metrics for s in samples):
        return None
    return spread([s.metrics[key] / d * 1000 for s, d in zip(samples, divide_by)])


def summarize(scenario: Scenario, samples: list[Sample], trips: RoundTrips | None) -> dict[str, Any]:
    n = scenario.missions
    out: dict[str, Any] = {
        "missions": n, "agents": scenario.agents, "llm_latency_ms": scenario.latency_ms,
        "llm_concurrency": scenario.concurrency, "repetitions": len(samples),
        "tick_s": spread([s.wall_s for s in samples]),
        "wall_ms_per_mission": per_mission_ms(samples, n, [s.wall_s for s in samples]),
        "daemon_cpu_ms_per_mission": per_mission_ms(samples, n, [s.daemon_cpu_s for s in samples]),
        "llm_cpu_ms_per_mission": per_mission_ms(samples, n, [s.llm_cpu_s for s in samples]),
        "postgres_cpu_ms_per_mission": per_mission_ms(samples, n, [s.postgres_cpu_s for s in samples]),
        "first_llm_request_ms": (spread([s.first_llm_request_s * 1000 for s in samples if s.first_llm_request_s
                                         is not None], 1)),
        "llm_max_in_flight": {k: int(v) for k, v in spread([s.max_in_flight for s in samples], 0).items()},
        "daemon_metrics": {
            # the cycle as the daemon times it; the rest of wall time is the HTTP request around it
            "tick_ms_per_mission": _metric_spread(samples, "mana_ai_tick_duration_seconds_sum", [n] * len(samples)),
            # the mean LLM call as the daemon waits for it (includes waiting for a connection)
            "llm_call_ms_mean": _metric_spread(
                samples, "mana_ai_planner_request_duration_seconds_sum",
                [max(1.0, s.metrics.get("mana_ai_planner_request_duration_seconds_count", 0.0)) for s in samples]),
        },
    }
    stage_keys = sorted({k for s in samples for k in s.metrics if k.startswith(STAGE_FAMILY + "_sum")})
    if stage_keys:  # summed over concurrent missions: a stage's share of the work, not of wall time
        out["daemon_metrics"]["stage_ms_per_mission"] = {
            k[len(STAGE_FAMILY + "_sum"):].strip("{}").removeprefix("stage="): _metric_spread(samples, k, [n] * len(samples))
            for k in stage_keys}
    if trips is not None:
        out["round_trips"] = {
            "per_mission": round(trips.total / n, 2), "per_tick": trips.total,
            "connections_opened": trips.connections,
            "by_statement_per_mission": {k: round(v / n, 3) for k, v in
                                         sorted(trips.by_statement.items(), key=lambda kv: (-kv[1], kv[0]))},
        }
    return out


def targets(runs: dict[str, Any], speedup: float | None) -> dict[str, bool]:
    """Each performance target whose scenario ran, judged on the medians."""
    checks: dict[str, bool] = {}
    if zero := runs.get("zero-latency"):
        checks["zero-latency: wall <= 3 ms/mission"] = zero["wall_ms_per_mission"]["median"] <= 3
        checks["zero-latency: daemon CPU <= 2.5 ms/mission"] = zero["daemon_cpu_ms_per_mission"]["median"] <= 2.5
        checks["zero-latency: first LLM request <= 50 ms"] = zero["first_llm_request_ms"]["median"] <= 50
    wide = runs.get("wide")
    if wide and min(wide["agents"], wide["llm_concurrency"]) >= 15:  # else 15x is out of reach by design
        bound = wide["missions"] * wide["llm_latency_ms"] / 1000 / 15
        checks[f"wide: tick <= {bound:.2f} s"] = wide["tick_s"]["median"] <= bound
        if speedup is not None:
            checks["wide: >= 15x sequential per mission"] = speedup >= 15
    return checks


async def main(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    chosen = [all_scenarios(args.missions, args.agents)[name] for name in args.scenario or
              ["zero-latency", "wide", "sequential"]]
    results: dict[str, Any] = {"cpus": os.cpu_count(), "postgres": "MANA_AI_BENCH_DSN" if os.environ.get(
        "MANA_AI_BENCH_DSN") else "embedded (Unix socket)", "scenarios": {}}
    with postgres() as admin_dsn, tempfile.TemporaryDirectory(prefix="mana-ai-daemon-bench-") as tmp:
        async with open_asyncio_bridge():
            postmaster = await aio_as_trio(_postmaster_pid)(admin_dsn)
            poolers = ["none", "transaction"] if args.db_pooler == "both" else [args.db_pooler]
            for scenario in chosen:
                async with open_stand_in_llm(scenario.latency_ms) as llm:
                    samples: dict[str, list[Sample]] = {p: [] for p in poolers}
                    for rep in range(args.repeat):  # interleaved: each setting sees the same load
                        for pooler in poolers:
                            samples[pooler].append(await run_once(
                                admin_dsn, scenario, llm, postmaster, Path(tmp), f"bench-{scenario.name}-{pooler}-{rep}",
                                count_round_trips=False, profile_dir=args.profile, db_pooler=pooler))
                    for pooler in poolers:
                        trips = None
                        if args.count_round_trips:
                            trips = (await run_once(admin_dsn, scenario, llm, postmaster, Path(tmp),
                                                    f"bench-{scenario.name}-{pooler}-counted", count_round_trips=True,
                                                    db_pooler=pooler)).round_trips
                        key = scenario.name if pooler == "none" else f"{scenario.name} pooler={pooler}"
                        results["scenarios"][key] = summarize(scenario, samples[pooler], trips)
    runs = results["scenarios"]
    speedup = None
    if "wide" in runs and "sequential" in runs:  # per mission: the sequential run has fewer missions
        speedup = round(runs["sequential"]["wall_ms_per_mission"]["median"]
                        / runs["wide"]["wall_ms_per_mission"]["median"], 2)
        results["speedup_wide_vs_sequential"] = speedup
    results["targets"] = targets(runs, speedup)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--missions", type=int, default=200, help="due missions per tick (sequential: a quarter)")
    parser.add_argument("--agents", type=int, default=20, help="one-slot agents they are spread over")
    parser.add_argument("--repeat", type=int, default=3, help="measured ticks per scenario, each on a fresh database")
    parser.add_argument("--scenario", action="append", choices=["zero-latency", "wide", "sequential"],
                        help="run only these (repeatable); default: all three")
    parser.add_argument("--count-round-trips", action=argparse.BooleanOptionalAction, default=True,
                        help="one more, untimed, tick per scenario through a counting database proxy")
    parser.add_argument("--db-pooler", choices=["none", "transaction", "both"], default="none",
                        help="the daemon's MANA_AI_DB_POOLER; both: the two interleaved, reported side by side")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run the timed daemons under cProfile, one DIR/<instance>.prof each (for finding"
                             " where the time goes: cProfile slows the daemon, so its figures are not the benchmark's)")
    arguments = parser.parse_args()
    if min(arguments.missions, arguments.agents, arguments.repeat) < 1:
        parser.error("--missions, --agents and --repeat must be at least 1")
    print(json.dumps(trio.run(main, arguments), indent=2))
