"""The runtime: the actors and the services they share, assembled on an open, migrated pool.

`open_runtime` opens the LLM and research clients, starts the lease keeper, the group commit,
the agent registry and (with deep research configured) the research desk, and builds the snapshot
actor that dispatches to them; its caller runs the actor's schedule (`serve`) or one cycle
(`tick`, `mana-ai demo`). On exit it drains them within the grace period. The process entry
(`supervisor.py`) and the demo use it; it imports neither.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial

import asyncpg
import httpx
import trio

from actors.hand_back import hand_back, mission_context
from actors.inputs import InputResolver
from actors.leases import LeaseKeeper
from actors.messages import MissionDue
from actors.mission import MissionRunner, RetryPolicy
from actors.registry import AgentRegistry
from actors.research_desk import ResearchDesk
from actors.snapshot import SnapshotActor
from actors.spend import GlobalBudget
from grants import KeyProblem, MissionKey, load_private_key
from http_api.app import VERSION
from observability.metrics import Metrics
from observability.redact import safe_url
from observability.tracing import Tracing
from observability.tracing_setup import open_tracing
from planner.storable import RowBounds
from settings import Settings
from store.group_commit import GroupCommit
from store.migrate import read_sync_schema
from store.runs import renew_leases
from store.sync_schema import SyncSchema
from upstream.circuit import Breaker, LlmCircuit
from upstream.deep_research_client import DeepResearchClient, open_deep_research_http_client
from upstream.fair_slots import FairSlots
from upstream.errors import LlmError
from upstream.llm import LlmClient, StartupCheck, models_probe, open_llm_http_client
from upstream.research_client import ResearchClient, open_research_http_client

log = logging.getLogger("mana_ai")


@dataclass
class Runtime:
    """The actors and their shared services, built from settings on an open pool."""

    snapshots: SnapshotActor
    registry: AgentRegistry
    llm: LlmClient
    sync: SyncSchema  # the generation of sync_changes found at start
    circuit: LlmCircuit  # the LLM circuit breaker: outages park missions instead of failing them
    desk: ResearchDesk | None = None  # deep research (MANA_RESEARCH_URL and its key set)
    global_budget: GlobalBudget | None = None  # the deployment's daily token cap as reservations see it

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
                        limiter=llm_slots(settings, metrics),
                        observe_duration=metrics.planner_duration.observe,
                        max_tokens=settings.llm_max_tokens,
                        on_retry=lambda reason: metrics.llm_retries.labels(reason=reason).inc())
        circuit = llm_circuit(settings, metrics, llm)
        await nursery.start(circuit.run)  # probes while the circuit is open; ends on close()
        llm.admits = circuit.admits  # no request (nor retry) goes out while it is open, but the probe
        inputs = InputResolver(pool, load_mission_key(settings.private_key_pem), metrics, sync=sync)
        leases = LeaseKeeper(partial(renew_leases, pool), metrics, lease_s=settings.lease_s)
        await nursery.start(leases.run)  # ends after the registry handed every claim back
        writer = GroupCommit(pool, sync=sync, bounds=RowBounds(settings.max_json_depth, settings.max_string_bytes,
                                                               settings.max_id_chars, settings.max_row_bytes))
        await nursery.start(writer.run)  # ends once the registry is stopped and the queue is empty
        runner = MissionRunner(pool, llm, settings, metrics, tracing=tracing, inputs=inputs, research=research,
                               retry=RetryPolicy(settings.retry_base_s, settings.retry_max_s), leases=leases,
                               writer=writer, sync=sync, circuit=circuit)

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
        snapshots.dispatch_held = lambda: not circuit.admits()  # no claims while the LLM is down
        circuit.on_closed = partial(snapshots.due_again, 0.0)  # parked slots are dispatched at once
        if desk is not None:
            desk.due_again = snapshots.due_again  # and parked slots
        try:
            yield Runtime(snapshots, registry, llm, sync, circuit, desk, runner.global_budget)
        finally:
            circuit.close()
            with trio.CancelScope(shield=True):
                await stop_dispatching(registry, desk, settings.grace_s)
                writer.close()
                leases.close()
                await tracing.aclose()


def llm_circuit(settings: Settings, metrics: Metrics, llm: LlmClient) -> LlmCircuit:
    """The LLM's circuit breaker (MANA_AI_LLM_CIRCUIT_*); its probe is one tiny request."""
    async def probe() -> LlmError | None:
        try:
            await llm.probe()
        except LlmError as exc:
            return exc
        return None

    breaker = Breaker(settings.llm_circuit_failures, settings.llm_circuit_min_users, settings.llm_circuit_probe_s,
                      max(settings.llm_circuit_probe_s, settings.llm_circuit_probe_max_s))
    return LlmCircuit(breaker, metrics, probe=probe)


async def probe_llm_at_start(settings: Settings, check: StartupCheck) -> None:
    """GET the LLM's model list once (MANA_AI_LLM_STARTUP_PROBE): a wrong URL or key shows at
    start, as one warning line and in /health, never as an exit."""
    check.state = "pending"
    async with httpx.AsyncClient() as http:
        error = await models_probe(http, settings.mana_llm_url, settings.llm_api_key)
    check.state, check.error = ("ok", None) if error is None else ("failed", error)
    if error is None:
        log.info("llm.startup_probe_ok", extra={"url": safe_url(settings.mana_llm_url)})
    else:
        log.warning("llm.startup_probe_failed", extra={
            "error": error, "then": "the daemon runs on; missions are tried when due (see /health)"})


def llm_slots(settings: Settings, metrics: Metrics) -> FairSlots:
    """MANA_AI_LLM_CONCURRENCY slots for LLM requests, shared fairly between users; their
    queue is seen in the metrics."""
    slots = FairSlots(settings.llm_concurrency, observe_wait=metrics.llm_queue_wait.observe)
    metrics.llm_users_waiting.set_function(lambda: slots.users_waiting)
    metrics.llm_missions_waiting.set_function(lambda: slots.waiting)
    return slots


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
    """The grant key from MANA_AI_PRIVATE_KEY_PEM; unusable → grants disabled (as in the TypeScript service)."""
    loaded = load_private_key(pem)
    if isinstance(loaded, KeyProblem):
        if loaded.reason == "not-configured":
            log.info("grants.disabled", extra={"reason": "MANA_AI_PRIVATE_KEY_PEM is not set"})
        else:  # the message names the problem, never key material
            log.error("grants.key_unusable", extra={"reason": loaded.reason, "error": loaded.message})
        return None
    return loaded
