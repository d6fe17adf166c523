"""Process entry: configuration, database (embedded or external), the root nursery, shutdown.

    mana-ai [serve]   run the daemon (default)
    mana-ai tick      run one cycle and print its TickStats JSON
    mana-ai migrate   apply the schema and exit
    mana-ai demo      the whole loop on a throwaway embedded Postgres with seeded data

Shutdown on SIGTERM/SIGINT (DESIGN §2.3), within one grace period in total: at once, HTTP
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
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from types import FrameType

import asyncpg
import httpx
import trio

from actors.groups import single_leaf
from actors.hand_back import hand_back, mission_context
from actors.inputs import InputResolver
from actors.janitor import Janitor, retention_of
from actors.leases import LeaseKeeper
from actors.messages import MissionDue
from actors.mission import MissionRunner, RetryPolicy
from actors.registry import AgentRegistry
from actors.research_desk import ResearchDesk
from actors.snapshot import SnapshotActor
from demo import run_demo
from grants import KeyProblem, MissionKey, load_private_key
from http_api.app import VERSION, AppDeps, create_app
from http_api.jwt import open_jwks_cache
from http_api.server import FrontFailed, hypercorn_config, serve_http
from observability.logs import configure_logging
from observability.metrics import Metrics
from observability.redact import safe_url
from observability.tracing import Tracing
from observability.tracing_setup import open_tracing
from planner.storable import RowBounds
from settings import ConfigError, Settings, load_settings
from store.bridge import open_asyncio_bridge
from store.embedded import EmbeddedPostgres, throwaway_postgres
from store.errors import SchemaMismatch, StoreError
from store.group_commit import GroupCommit
from store.migrate import migrate, read_sync_schema
from store.sync_schema import SyncSchema
from store.listen import ChangeListener, set_notify_trigger
from store.pool import open_pool
from store.runs import renew_leases
from upstream.deep_research_client import DeepResearchClient, open_deep_research_http_client
from upstream.llm import LlmClient, open_llm_http_client
from upstream.research_client import ResearchClient, open_research_http_client

log = logging.getLogger("mana_ai")


async def watch_signals(shutdown: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            log.info("daemon.signal_received", extra={"signal": signal.Signals(signum).name})
            shutdown.set()
            return


@dataclass
class Runtime:
    """The actors and their shared services, built from settings on an open pool."""

    snapshots: SnapshotActor
    registry: AgentRegistry
    llm: LlmClient
    sync: SyncSchema  # the generation of sync_changes found at start
    desk: ResearchDesk | None = None  # deep research (MANA_RESEARCH_URL and its key set)

    async def stop(self, grace_s: float) -> None:
        """Shutdown: at once no cycle, no mission and no LLM request starts any more; missions
        in flight get `grace_s`, then are cancelled and hand their slots back."""
        self.snapshots.stop()
        self.llm.close()
        await stop_dispatching(self.registry, self.desk, grace_s)


async def stop_dispatching(registry: AgentRegistry, desk: ResearchDesk | None, grace_s: float) -> None:
    """Stop the registry and the research desk together, within one grace period."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(registry.stop, grace_s)
        if desk is not None:
            nursery.start_soon(desk.stop, grace_s)


def deep_research_client(settings: Settings, http: httpx.AsyncClient | None) -> DeepResearchClient | None:
    """mana-research's client, when its URL and its own key are set (the service key guards
    /internal/* only and is never sent upstream); one start-up line says what is on."""
    url, key = settings.mana_research_url, settings.research_service_key
    if url is None or key is None or http is None:
        if settings.deep_research:
            missing = " and ".join(name for name, value in (("MANA_RESEARCH_URL", url),
                                                             ("MANA_AI_RESEARCH_SERVICE_KEY", key)) if value is None)
            log.warning("deep_research.disabled", extra={"reason": f"MANA_AI_DEEP_RESEARCH is true but {missing} "
                                                                   "is not set"})
        return None
    log.info("deep_research.enabled", extra={"url": safe_url(url), "submit": settings.deep_research,
                                             "max_age_min": settings.deep_research_max_age_min})
    return DeepResearchClient(http, base_url=url, service_key=key)


@asynccontextmanager
async def open_runtime(settings: Settings, pool: asyncpg.Pool, metrics: Metrics,
                       *, tracing: Tracing | None = None, sync: SyncSchema | None = None) -> AsyncIterator[Runtime]:
    """Start the agent registry (and its LLM client); on exit, drain it within the grace period.

    `sync` is the generation of `sync_changes`; None reads it from the database (once).
    """
    sync = sync or await read_sync_schema(pool)
    announce_sync_schema(settings, sync)
    tracing = tracing or open_tracing(settings.otlp_endpoint, service_version=VERSION)
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(open_llm_http_client(settings.llm_concurrency))
        research = None
        if settings.research_token is not None:
            research_http = await stack.enter_async_context(open_research_http_client())
            research = ResearchClient(research_http, base_url=settings.mana_api_url, token=settings.research_token)
        deep_http = None
        if settings.mana_research_url is not None and settings.research_service_key is not None:
            deep_http = await stack.enter_async_context(open_deep_research_http_client())
        deep = deep_research_client(settings, deep_http)
        nursery = await stack.enter_async_context(trio.open_nursery())
        llm = LlmClient(http, base_url=settings.mana_llm_url, api_key=settings.llm_api_key,
                        model=settings.llm_model, timeout_s=settings.llm_timeout_s, retries=settings.llm_retries,
                        limiter=trio.CapacityLimiter(settings.llm_concurrency),
                        observe_duration=metrics.planner_duration.observe,
                        on_retry=lambda reason: metrics.llm_retries.labels(reason=reason).inc())
        inputs = InputResolver(pool, load_mission_key(settings.private_key_pem), metrics, sync=sync)
        leases = LeaseKeeper(partial(renew_leases, pool), metrics, lease_s=settings.lease_s)
        await nursery.start(leases.run)  # ends after the registry handed every claim back
        writer = GroupCommit(pool, sync=sync, bounds=RowBounds(settings.max_json_depth, settings.max_string_bytes,
                                                               settings.max_id_chars, settings.max_row_bytes))
        await nursery.start(writer.run)  # ends once the registry is stopped and the queue is empty
        runner = MissionRunner(pool, llm, settings, metrics, tracing=tracing, inputs=inputs, research=research,
                               retry=RetryPolicy(settings.retry_base_s, settings.retry_max_s), leases=leases,
                               writer=writer, sync=sync)

        async def release(due: MissionDue, reason: str) -> None:
            leases.settling(due.claim)
            try:
                await hand_back(pool, metrics, due.claim, reason, mission_context(due))
            finally:
                leases.let_go(due.claim)

        registry = AgentRegistry(runner.run, release, metrics, mailbox_size=settings.mailbox_size,
                                 legacy_limit=settings.mailbox_size)
        await nursery.start(registry.run)
        desk = None
        if deep is not None:  # in front of the registry: missions asking for deep research stop here first
            desk = ResearchDesk(registry, deep, pool, leases, metrics, submit=settings.deep_research,
                                max_age_s=settings.deep_research_max_age_min * 60.0,
                                poll_interval_s=settings.deep_research_poll_s)
            await nursery.start(desk.run)
        snapshots = SnapshotActor(pool, settings, metrics, dispatcher=desk or registry, leases=leases, sync=sync)
        runner.due_again = snapshots.due_again  # retries and hand-backs after a cycle reach its due timer
        if desk is not None:
            desk.due_again = snapshots.due_again  # and parked slots
        try:
            yield Runtime(snapshots, registry, llm, sync, desk)
        finally:
            with trio.CancelScope(shield=True):
                await stop_dispatching(registry, desk, settings.grace_s)
                writer.close()
                leases.close()
                await tracing.aclose()


def announce_sync_schema(settings: Settings, sync: SyncSchema) -> None:
    """The start-up line naming the sync_changes generation found, and a warning when an
    embedded table predates MANA_AI_SYNC_SCHEMA (an existing table is never changed)."""
    log.info("sync_changes.generation", extra={"generation": sync.generation, "stamps": sync.stamps_column,
                                               "origin": sync.origin})
    if settings.embedded and sync.generation != settings.embedded_sync_schema:
        log.warning("sync_changes.generation_differs", extra={
            "generation": sync.generation, "wanted": settings.embedded_sync_schema,
            "detail": "the embedded table was created earlier with another generation; it is used as it is"})


def load_mission_key(pem: str | None) -> MissionKey | None:
    """The grant key from MANA_AI_PRIVATE_KEY_PEM; unusable → grants disabled (as the reference)."""
    loaded = load_private_key(pem)
    if isinstance(loaded, KeyProblem):
        if loaded.reason == "not-configured":
            log.info("grants.disabled", extra={"reason": "MANA_AI_PRIVATE_KEY_PEM is not set"})
        else:  # the message names the problem, never key material
            log.error("grants.key_unusable", extra={"reason": loaded.reason, "error": loaded.message})
        return None
    return loaded


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
        if listen_dsn is not None and settings.notify and settings.tick_enabled:
            if await set_notify_trigger(pool, True):
                listener = ChangeListener(listen_dsn, runtime.snapshots.hint)
        app = create_app(AppDeps(settings, metrics, pool, runtime.snapshots, runtime.registry, listener, jwks=jwks,
                                 llm_health=runtime.llm.health, sync_schema=runtime.sync))
        config = hypercorn_config(settings.bind_host, settings.port, settings.grace_s + 1)
        async with trio.open_nursery() as scanning:
            await scanning.start(runtime.snapshots.run)
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


async def serve_daemon(settings: Settings, dsn: str, shutdown: trio.Event) -> None:
    """The whole daemon: asyncio bridge, pool, migrations, then `run_daemon`."""
    warn_about_defaults(settings)
    metrics = Metrics()
    stray = metrics.asyncio_stray_errors
    async with open_asyncio_bridge(lambda kind: stray.labels(error=kind).inc()), \
            open_pool(dsn, settings.db_pool_size, settings.db_connect_timeout_s) as pool:
        await migrate(pool, create_sync_changes=settings.embedded, embedded_generation=settings.embedded_sync_schema)
        await run_daemon(settings, pool, metrics, shutdown, listen_dsn=dsn)
    log.info("daemon.stopped")


async def _serve_main(settings: Settings, dsn: str) -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals, shutdown)
        await serve_daemon(settings, dsn, shutdown)
        nursery.cancel_scope.cancel()  # the daemon ended: stop watching signals


async def _tick_main(settings: Settings, dsn: str) -> None:
    async with open_asyncio_bridge(), open_pool(dsn, settings.db_pool_size, settings.db_connect_timeout_s) as pool:
        await migrate(pool, create_sync_changes=settings.embedded, embedded_generation=settings.embedded_sync_schema)
        async with open_runtime(settings, pool, Metrics()) as runtime:
            stats = await runtime.snapshots.run_cycle()
    print(json.dumps(stats.as_json()))


async def _migrate_main(settings: Settings, dsn: str) -> None:
    async with open_asyncio_bridge(), open_pool(dsn, 2, settings.db_connect_timeout_s) as pool:
        applied = await migrate(pool, create_sync_changes=settings.embedded,
                                embedded_generation=settings.embedded_sync_schema)
        sync = await read_sync_schema(pool)
    print(json.dumps({"applied": applied, "syncSchema": sync.generation}))


async def _demo_main(settings: Settings, dsn: str) -> None:
    async with open_asyncio_bridge():
        await run_demo(settings, dsn)


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
        prog="mana-ai", usage="%(prog)s [-h] [--version] [serve | tick | migrate | demo]",
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
