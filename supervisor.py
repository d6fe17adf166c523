"""Process entry: configuration, database (embedded or external), the root nursery, shutdown.

    mana-ai [serve]   run the daemon (default)
    mana-ai tick      run one cycle and print its TickStats JSON
    mana-ai migrate   apply the schema and exit
    mana-ai demo      the whole loop on a throwaway embedded Postgres with seeded data
    mana-ai stand-in-llm [--host H] [--port P]   the demo's stand-in LLM as a server, until SIGTERM/SIGINT
    mana-ai seed-example [--user U]              one due example mission in the configured database

Shutdown on SIGTERM/SIGINT, within one grace period in total: at once, HTTP
stops accepting, the snapshot actor starts no cycle and agent actors start no mission (queued
ones are handed back); in-flight missions get `MANA_AI_GRACE_S`, then are cancelled and hand
their slots back, while HTTP drains (an in-flight manual tick gets its stats) → close the pool
(bounded) → stop the embedded PostgreSQL, if we started it. Exit code 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import partial
from types import FrameType

import asyncpg
import trio

from actors.groups import single_leaf
from actors.janitor import Janitor, retention_of
from demo import run_demo
from demo.example import EXAMPLE_USER, seed_example
from demo.seeds import PLANS
from demo.stand_in_llm import stand_in_app
from http_api.app import VERSION, AppDeps, create_app
from http_api.jwt import open_jwks_cache
from http_api.server import FrontFailed, hypercorn_config, serve_http
from observability.logs import configure_logging
from observability.metrics import Metrics
from runtime import open_runtime, probe_llm_at_start
from settings import ConfigError, Settings, load_settings
from store.bridge import open_asyncio_bridge
from store.embedded import EmbeddedPostgres, throwaway_postgres
from store.errors import SchemaMismatch, StoreError
from store.migrate import migrate, read_sync_schema
from store.listen import ChangeListener, set_notify_trigger
from store.pool import open_pool
from upstream.llm import StartupCheck

log = logging.getLogger("mana_ai")

#: How long shutdown may take after `MANA_AI_GRACE_S`: missions cancelled at its end give back
#: their token reservation (at most 5 s) and then their claim (at most 5 s), shielded
#: (actors/mission.py; a cycle cut short hands its claims back within 10 s meanwhile,
#: actors/snapshot.py); then the pool closes (at most 5 s, store/pool.py). An embedded PostgreSQL
#: is stopped after that (a fast shutdown: a checkpoint).
AFTER_GRACE_S = 5.0 + 5.0 + 5.0


def shutdown_bound_s(settings: Settings) -> float:
    """The longest SIGTERM → exit of `serve` on an external database: what a container's stop
    timeout must exceed (deploy/compose.yaml, the README's `docker run`)."""
    return settings.grace_s + AFTER_GRACE_S


async def watch_signals(shutdown: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            log.info("daemon.signal_received", extra={"signal": signal.Signals(signum).name})
            shutdown.set()
            return


async def run_daemon(settings: Settings, pool: asyncpg.Pool, metrics: Metrics, shutdown: trio.Event,
                     *, listen_dsn: str | None = None,
                     task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Actors and the HTTP front on an open, migrated pool until `shutdown` is set.

    `nursery.start` gets the HTTP binds once the daemon is serving. With `listen_dsn`, the
    scheduler on and `MANA_AI_NOTIFY`, a NOTIFY listener wakes the snapshot actor on changes.
    Shutdown, all at once: HTTP stops accepting and drains, the snapshot actor stops, agent
    actors start nothing new and finish in-flight missions within `MANA_AI_GRACE_S` (then are
    cancelled and hand their claims back). HTTP gets a second more than the missions, so that
    a manual tick waiting for them still answers.
    """
    settings.check_serving()  # `main` checked before anything started; this holds for other callers too
    async with open_runtime(settings, pool, metrics) as runtime, open_jwks_cache(settings.mana_auth_url) as jwks:
        listener = None
        startup = StartupCheck("pending" if settings.llm_startup_probe else "off")
        if listen_dsn is not None and settings.notify and settings.tick_enabled:
            if await set_notify_trigger(pool, True):
                listener = ChangeListener(listen_dsn, runtime.snapshots.hint)
        app = create_app(AppDeps(settings, metrics, pool, runtime.snapshots, runtime.registry, listener, jwks=jwks,
                                 llm_health=runtime.llm.health, sync_schema=runtime.sync,
                                 global_budget=runtime.global_budget.state if runtime.global_budget else None,
                                 llm_queue=runtime.llm.waiting_users, llm_circuit=runtime.circuit.snapshot,
                                 llm_startup=startup))
        config = hypercorn_config(settings.bind_host, settings.port, settings.grace_s + 1)
        async with trio.open_nursery() as scanning:
            await scanning.start(runtime.snapshots.run)
            if settings.llm_startup_probe:  # in the background: a slow LLM never delays serving
                scanning.start_soon(probe_llm_at_start, settings, startup)
            if listener is not None:
                await scanning.start(listener.run)
            # retention: small batches, a round at start and then hourly; stopped with the scanning
            await scanning.start(Janitor(pool, retention_of(settings), metrics).run)
            async with trio.open_nursery() as front:
                binds = await front.start(partial(serve_http, app, config, shutdown.wait, metrics=metrics))
                log.info("daemon.listening", extra={"binds": ",".join(binds),
                                                    "tick": "on" if settings.tick_enabled else "off",
                                                    "instance": settings.instance_id})
                task_status.started(binds)
                await shutdown.wait()
                log.info("daemon.stopping", extra={"grace_s": settings.grace_s})
                await runtime.stop(settings.grace_s)
            # HTTP has drained and every mission has ended or been handed back
            scanning.cancel_scope.cancel()


def warn_about_defaults(settings: Settings) -> None:
    """Development defaults that must not reach production get one warning line at start (the
    development service key is served on loopback only: `Settings.check_serving`)."""
    if settings.default_service_key:
        log.warning("config.default_service_key", extra={
            "host": settings.bind_host,
            "detail": f"MANA_SERVICE_KEY is not set (or is the public development default): serving on "
                      f"{settings.bind_host} only; set MANA_SERVICE_KEY to serve other machines"})


def listen_target(settings: Settings, dsn: str) -> str | None:
    """Where the NOTIFY listener connects: MANA_AI_LISTEN_DATABASE_URL when set, else the
    daemon's own database — unless a transaction pooler sits in front of it (LISTEN holds a
    server connection that the pooler hands to other clients after each transaction, so the
    notifications would go astray): then nowhere, with one line saying so when NOTIFY is on;
    the due timer and the interval poll find the changes."""
    if settings.listen_database_url is not None:
        return settings.listen_database_url
    if settings.db_pooler != "transaction":
        return dsn
    if settings.notify and settings.tick_enabled:
        log.warning("notify.off", extra={
            "reason": "MANA_AI_DB_POOLER=transaction and MANA_AI_LISTEN_DATABASE_URL is not set: LISTEN cannot work "
                      "through a transaction pooler; set MANA_AI_LISTEN_DATABASE_URL to a direct (or session-pooled) "
                      f"URL to get change notifications; until then changes are found every {settings.tick_interval_s:g}s"
                      " (TICK_INTERVAL_MS) and at their due times"})
    return None


async def serve_daemon(settings: Settings, dsn: str, shutdown: trio.Event) -> None:
    """The whole daemon: asyncio bridge, pool, migrations, then `run_daemon`."""
    warn_about_defaults(settings)
    metrics = Metrics()
    stray = metrics.asyncio_stray_errors
    listen_dsn = listen_target(settings, dsn)
    async with open_asyncio_bridge(lambda kind: stray.labels(error=kind).inc()), \
            open_pool(dsn, settings.db_pool_size, settings.db_connect_timeout_s, pooler=settings.db_pooler) as pool:
        await migrate(pool, create_sync_changes=settings.embedded, embedded_generation=settings.embedded_sync_schema)
        await run_daemon(settings, pool, metrics, shutdown, listen_dsn=listen_dsn)
    log.info("daemon.stopped")



async def _serve_main(settings: Settings, dsn: str) -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals, shutdown)
        await serve_daemon(settings, dsn, shutdown)
        nursery.cancel_scope.cancel()  # the daemon ended: stop watching signals


async def _tick_main(settings: Settings, dsn: str) -> None:
    async with open_asyncio_bridge(), open_pool(dsn, settings.db_pool_size, settings.db_connect_timeout_s,
                                                pooler=settings.db_pooler) as pool:
        await migrate(pool, create_sync_changes=settings.embedded, embedded_generation=settings.embedded_sync_schema)
        async with open_runtime(settings, pool, Metrics()) as runtime:
            stats = await runtime.snapshots.run_cycle()
    print(json.dumps(stats.as_json()))


async def _migrate_main(settings: Settings, dsn: str) -> None:
    async with open_asyncio_bridge(), open_pool(dsn, 2, settings.db_connect_timeout_s,
                                                pooler=settings.db_pooler) as pool:
        applied = await migrate(pool, create_sync_changes=settings.embedded,
                                embedded_generation=settings.embedded_sync_schema)
        sync = await read_sync_schema(pool)
    print(json.dumps({"applied": applied, "syncSchema": sync.generation}))


async def _demo_main(settings: Settings, dsn: str) -> None:
    async with open_asyncio_bridge():
        await run_demo(settings, dsn)


async def _seed_example_main(settings: Settings, dsn: str, user_id: str) -> None:
    async with open_asyncio_bridge(), open_pool(dsn, 2, settings.db_connect_timeout_s) as pool:
        await migrate(pool, create_sync_changes=settings.embedded, embedded_generation=settings.embedded_sync_schema)
        seeded = await seed_example(pool, user_id, datetime.now(timezone.utc))
    print(json.dumps(seeded))


async def _stand_in_main(host: str, port: int) -> None:
    """The demo's stand-in LLM (OpenAI-compatible: `/v1/chat/completions`, `/v1/models`) until
    SIGTERM or SIGINT; one line per answer."""
    def answered(title: str, steps: int) -> None:
        print(f"answered {title!r} with {steps} steps", flush=True)

    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals, shutdown)
        config = hypercorn_config(host, port, graceful_timeout_s=1)
        url = (await nursery.start(partial(serve_http, stand_in_app(PLANS, answered), config, shutdown.wait)))[0]
        print(f"stand-in LLM listening on {url}\n"
              f"  start the daemon with MANA_LLM_URL={url}\n"
              "  it answers the demo's missions (and `mana-ai seed-example`'s) with prepared plans; "
              "Ctrl-C stops it", flush=True)
        await shutdown.wait()
    print("stand-in LLM stopped", flush=True)


COMMANDS = {"serve": _serve_main, "tick": _tick_main, "migrate": _migrate_main, "demo": _demo_main}


class _Terminated(Exception):
    """SIGTERM arrived before trio took over the signals (e.g. while Postgres starts)."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated()
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mana-ai", usage="%(prog)s [-h] [--version] [serve | tick | migrate | demo | stand-in-llm | seed-example]",
        description="The background mission planner of the mana AI workbench.",
        epilog="Configured by environment variables only (docs/configuration.md). Without "
               "SYNC_DATABASE_URL an embedded PostgreSQL runs under MANA_AI_STATE_DIR.")
    parser.add_argument("--version", action="version", version=f"mana-ai {VERSION}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="command",
                                     help="one of these; serve when none is given")
    for name, text in [
        ("serve", "run the daemon (the default): scheduler, agent actors, HTTP API; SIGTERM stops it"),
        ("tick", "run one cycle (plan the due missions, write the plans back), print its stats as JSON, exit"),
        ("migrate", "apply pending database migrations, print them as JSON, exit"),
        ("demo", "run the whole loop once on a throwaway embedded PostgreSQL with seeded data and a "
                 "stand-in LLM; touches no configured database"),
    ]:
        commands.add_parser(name, help=text, description=text)
    text = ("serve the demo's stand-in LLM (OpenAI-compatible, prepared plans) until Ctrl-C or SIGTERM; "
            "point MANA_LLM_URL at the URL it prints")
    stand_in = commands.add_parser("stand-in-llm", help=text, description=text)
    stand_in.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    stand_in.add_argument("--port", type=int, default=3020, help="port (default: 3020; 0 picks a free one)")
    text = ("write one due example mission (the demo's 'Weekly review') into the configured database, "
            "as a user's device would, print it as JSON, exit")
    seed = commands.add_parser("seed-example", help=text, description=text)
    seed.add_argument("--user", default=EXAMPLE_USER, help=f"the mission's user (default: {EXAMPLE_USER})")
    parser.set_defaults(command="serve")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(os.environ)
        if args.command == "serve":
            settings.check_serving()
    except ConfigError as exc:
        print(f"mana-ai: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    if settings.shared_variables:  # names only: their values are other services' (keys, DSNs)
        log.debug("config.shared_variables_ignored", extra={
            "names": ",".join(settings.shared_variables),
            "detail": "read by other Mana services and tools, not by this daemon (docs/configuration.md)"})
    if args.command == "stand-in-llm":  # no database
        try:
            trio.run(_stand_in_main, args.host, args.port)
        except BaseException as exc:  # noqa: BLE001 - a taken port is one line; anything else is re-raised
            leaf = single_leaf(exc)
            if isinstance(leaf, KeyboardInterrupt):  # before the signal watcher took over
                return 0
            if not isinstance(leaf, OSError):
                raise
            print(f"mana-ai: stand-in LLM: cannot listen on {args.host}:{args.port}: {leaf}", file=sys.stderr)
            return 1
        return 0
    embedded: EmbeddedPostgres | None = None
    try:
        with _sigterm_raises():  # so `finally` still stops an embedded Postgres we started
            if args.command == "demo":  # never the operator's database: a throwaway one
                with throwaway_postgres("mana-ai-demo-") as demo_dsn:
                    trio.run(_demo_main, settings, demo_dsn)
                return 0
            dsn = settings.sync_database_url
            if dsn is None:
                embedded = EmbeddedPostgres(settings.state_dir)
                dsn = embedded.start()
            if args.command == "seed-example":
                trio.run(_seed_example_main, settings, dsn, args.user)
            else:
                trio.run(COMMANDS[args.command], settings, dsn)
        return 0
    except BaseException as exc:  # noqa: BLE001 - sorted below; anything unexpected is re-raised
        leaf = single_leaf(exc)
        if isinstance(leaf, (_Terminated, KeyboardInterrupt)):
            log.info("daemon.interrupted")
            return 0
        if isinstance(leaf, SchemaMismatch):  # waiting or restarting will not help
            print(f"mana-ai: database error: {leaf}", file=sys.stderr)
            return 2
        if isinstance(leaf, StoreError):
            log.error("daemon.database_unavailable", extra={"error": str(leaf)})
            return 1
        if isinstance(leaf, (OSError, FrontFailed)):
            log.error("daemon.failed", extra={"error": f"{type(leaf).__name__}: {leaf}"})
            return 1
        raise
    finally:
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    sys.exit(main())
