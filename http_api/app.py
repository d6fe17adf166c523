"""The quart-trio app: health, metrics, the manual tick and the `/internal/*` gate; the inspection
routes, the audit endpoint, the dead-slot actions (one slot, and in bulk) and the console (`/ui`) come from their modules.

`VERSION` here is the one version (package metadata, `--version`, `/health`, traces)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import trio
from quart import Response, g, jsonify, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from actors.registry import AgentRegistry
from actors.snapshot import SnapshotActor
from actors.spend import GlobalSpend
from http_api.audit import register_audit
from http_api.auth import UNAUTHORIZED, service_key_ok
from http_api.console import ConsoleDeps, register_console
from http_api.console_actions import register_slot_actions
from http_api.dead_slots import register_dead_slots
from http_api.inspection import register_inspection
from http_api.jwt import JwksCache
from observability.metrics import Metrics
from planner.iteration import iso_ms
from settings import Settings
from store.listen import ChangeListener
from store.pool import probe
from store.sync_schema import SyncSchema
from upstream.fair_slots import WaitingUser
from upstream.circuit import CircuitState
from upstream.llm import LlmHealth, StartupCheck

VERSION = "0.1.0"
_FAILING_AFTER = 3  # cycles failed in a row before /health says the daemon is not ok


@dataclass(frozen=True)
class AppDeps:
    settings: Settings
    metrics: Metrics
    pool: asyncpg.Pool
    snapshots: SnapshotActor
    registry: AgentRegistry
    listener: ChangeListener | None = None
    jwks: JwksCache | None = None  # mana-auth's key set for /api/v1/me/ai-audit; None refuses every token
    llm_health: Callable[[], LlmHealth] | None = None  # how the last LLM calls went (None: not shown)
    sync_schema: SyncSchema | None = None  # the sync_changes generation found at start (None: not shown)
    global_budget: Callable[[], GlobalSpend] | None = None  # the deployment's daily token cap (None: not shown)
    llm_queue: Callable[[], list[WaitingUser]] | None = None  # who waits for an LLM slot (None: not shown)
    llm_circuit: Callable[[], CircuitState] | None = None  # the LLM circuit breaker (None: not shown)
    llm_startup: StartupCheck | None = None  # the start-up probe of the LLM (None: not shown)


def create_app(deps: AppDeps) -> QuartTrio:
    # no static or template folder of the working directory: the console brings its own
    app = QuartTrio("mana-ai", static_folder=None, template_folder=None)
    app.config["JSON_SORT_KEYS"] = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    metrics = deps.metrics
    database = DatabaseCheck(deps.pool)

    @app.before_request
    async def _gate() -> Any:
        g.started = time.perf_counter()
        g.metric_path = request.url_rule.rule if request.url_rule is not None else "*"
        metrics.http_in_flight.inc()
        g.in_flight = True
        if request.path.startswith("/internal/") or request.path == "/internal":
            if not service_key_ok(request.headers.get("X-Service-Key"), deps.settings.service_key):
                g.metric_path = "/internal/*"
                return jsonify(UNAUTHORIZED), 401
        if not _clean_parameters(request.view_args or {}, request.args):
            return jsonify(BAD_CHARACTERS), 400
        return None

    @app.after_request
    async def _count(response: Response) -> Response:
        labels = {"method": request.method, "path": g.get("metric_path", "*"), "status": str(response.status_code)}
        metrics.http_requests.labels(**labels).inc()
        metrics.http_duration.labels(**labels).observe(time.perf_counter() - g.get("started", time.perf_counter()))
        return response

    @app.teardown_request
    async def _leave(_exc: BaseException | None) -> None:
        # teardown runs even when a client disconnect cancels the handler; after_request would not
        if g.get("in_flight"):
            metrics.http_in_flight.dec()
            g.in_flight = False

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        if status == 405:  # the TypeScript service answers a wrong method with its 404
            status = 404
        message = "not found" if status == 404 else (exc.description or exc.name)
        return jsonify({"error": message}), status

    @app.get("/health")
    async def health() -> Any:
        body, ok = await _health(deps, database)
        return jsonify(body), 200 if ok else 503

    @app.get("/metrics")
    async def metrics_route() -> Any:
        _llm_json(deps)  # sets mana_ai_llm_up
        if deps.listener is not None:
            metrics.notify_listener_up.set(1 if deps.listener.state().connected else 0)
        metrics.observe_actors([("legacy" if a.key[1] is None else (a.agent.state if a.agent else "active"), a.queued)
                                for a in deps.registry.actor_stats()])
        payload, content_type = metrics.exposition(request.headers.get("Accept"))
        return Response(payload, status=200, content_type=content_type)

    @app.post("/internal/tick")
    async def tick() -> Any:
        cycle = deps.snapshots.request_cycle()
        # bounded by the cycle's own timeout, not by an HTTP idle timeout
        with trio.move_on_after(deps.settings.cycle_timeout_s + 30):
            stats = await cycle.wait()
            return jsonify(stats.as_json()), 200
        return jsonify({"error": "tick did not finish in time"}), 504

    register_inspection(app, deps.pool, deps.registry, deps.settings)
    register_audit(app, deps.pool, deps.jwks, deps.settings)
    register_slot_actions(app, deps.pool, deps.snapshots)
    register_dead_slots(app, deps.pool, deps.snapshots, deps.settings)
    register_console(app, ConsoleDeps(deps.pool, deps.settings, deps.snapshots, deps.registry,
                                      health=lambda: _health(deps, database), llm_queue=deps.llm_queue))
    return app


@dataclass
class _Ping:
    done: trio.Event = field(default_factory=trio.Event)
    result: bool | None = None  # None: the request running it was cancelled (its client left)


class DatabaseCheck:
    """`/health`'s database check, bounded under a flood: at most one ping in flight.

    Requests that arrive while a ping runs wait for it and share its result, so a flood of
    `/health` holds one pooled connection at most and never queues for the pool. Nothing is
    reused after the ping ends: a lost database (an error) shows on the next request. A ping
    without an answer within `timeout_s` fails the check only when no ping succeeded for
    `slow_grace_s` either: under a flood on two busy cores the loop itself may be what is slow,
    and a healthy daemon must not answer 503 for that; a database that hangs still does soon.
    """

    def __init__(self, pool: asyncpg.Pool, *, timeout_s: float = 2.0, slow_grace_s: float = 10.0) -> None:
        self._pool = pool
        self._timeout_s = timeout_s
        self._slow_grace_s = slow_grace_s
        self._last_ok = -math.inf  # trio time of the last successful ping
        self._current: _Ping | None = None
        self._pings = 0

    @property
    def pings(self) -> int:
        """Pings started so far."""
        return self._pings

    async def ok(self) -> bool:
        """Whether the database answered the ping in flight (a new one if none is)."""
        while (current := self._current) is not None:
            await current.done.wait()
            if current.result is not None:
                return current.result
            # that ping was cancelled with its request: run one ourselves (or join the next)
        self._current = current = _Ping()
        self._pings += 1
        try:
            outcome = await probe(self._pool, self._timeout_s)
            now = trio.current_time()
            if outcome == "ok":
                self._last_ok = now
            current.result = outcome == "ok" or (outcome == "timeout" and now - self._last_ok < self._slow_grace_s)
            return current.result
        finally:
            self._current = None
            current.done.set()


async def _health(deps: AppDeps, check: DatabaseCheck) -> tuple[dict[str, Any], bool]:
    settings = deps.settings
    actor = deps.snapshots.state()
    database = await check.ok()
    age = None if actor.last_cycle_completed_at is None else round(time.time() - actor.last_cycle_completed_at, 3)
    # cycles have stalled when none completed for several intervals (or one whole timeout)
    stall_after = max(3 * settings.tick_interval_s, settings.cycle_timeout_s + settings.tick_interval_s)
    stalled = settings.tick_enabled and age is not None and age > stall_after
    # a cycle failing again and again (not only a database outage) stops planning for everyone
    failing = actor.consecutive_failures >= _FAILING_AFTER
    ok = database and actor.alive and not stalled and not failing
    body = {
        "ok": ok,
        "service": "mana-ai",
        "version": VERSION,
        "tick": {"enabled": settings.tick_enabled, "running": settings.tick_enabled and actor.alive},
        **_llm_json(deps),
        **({} if deps.sync_schema is None else {"syncChanges": deps.sync_schema.as_json()}),
        **_budget_json(deps),
        "checks": {
            "database": database,
            "snapshotActor": actor.alive,
            "cycleRunning": actor.running,
            "cyclesCompleted": actor.cycles_completed,
            "lastCycleAgeSeconds": age,
            "cyclesStalled": stalled,
            "consecutiveCycleFailures": actor.consecutive_failures,
            "lastCycleError": actor.last_error,
            "agentActors": len(deps.registry),
            "notify": _notify_json(deps.listener),
        },
    }
    return body, ok


def _budget_json(deps: AppDeps) -> dict[str, Any]:
    """The deployment's daily token cap (MANA_AI_MAX_TOKENS_PER_DAY), when set. Never makes the
    daemon not-ok: planning pauses by design and resumes on its own."""
    if deps.global_budget is None:
        return {}
    spend = deps.global_budget()
    return {} if spend.cap is None else {"tokenBudget": spend.as_json()}


def _llm_json(deps: AppDeps) -> dict[str, Any]:
    """The LLM's state beside the TypeScript service's fields. It never makes the daemon not-ok, an open
    circuit included: a restart cannot fix an LLM that is down (missions are parked meanwhile,
    not failed), but an operator sees it at once. `ok` is true before any call; `lastCall`
    tells "none" from "ok"."""
    if deps.llm_health is None:
        return {}
    health = deps.llm_health()
    deps.metrics.llm_up.set(1 if health.ok else 0)
    last = None if health.last_success_at is None else iso_ms(datetime.fromtimestamp(health.last_success_at,
                                                                                      timezone.utc))
    body: dict[str, Any] = {"ok": health.ok, "consecutiveFailures": health.consecutive_failures,
                            "lastSuccessAt": last, "lastError": health.last_error, "lastCall": health.last_call}
    if deps.llm_circuit is not None:
        circuit = deps.llm_circuit()
        body["circuit"] = circuit.state
        body["circuitDetail"] = {
            "openedAt": None if circuit.opened_at is None else iso_ms(datetime.fromtimestamp(circuit.opened_at,
                                                                                              timezone.utc)),
            "nextProbeInSeconds": circuit.next_probe_in_s, "lastOutageError": circuit.last_error}
    if deps.llm_startup is not None:
        body["startupProbe"] = deps.llm_startup.as_json()
    return {"llm": body}


BAD_CHARACTERS = {"error": "invalid characters in the request"}
# control characters (NUL first: Postgres refuses it in text), lone surrogates and U+FFFD
# (what undecodable UTF-8 percent-escapes turn into)
_UNCLEAN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffd]")


def _clean_parameters(view_args: Mapping[str, Any], args: Mapping[str, str]) -> bool:
    """Whether route and query parameters are text we may use in a query and a log line."""
    values = [*(str(v) for v in view_args.values()), *args.keys(), *args.values()]
    return not any(_UNCLEAN.search(value) for value in values)


def _notify_json(listener: ChangeListener | None) -> dict[str, Any]:
    """NOTIFY is a latency hint: its state is reported, it never makes the daemon not-ok."""
    if listener is None:
        return {"enabled": False}
    state = listener.state()
    check_age = None if state.last_check_at is None else round(trio.current_time() - state.last_check_at, 3)
    return {"enabled": True, "connected": state.connected, "connects": state.connects,
            "notifications": state.notifications, "lastError": state.last_error,
            "lastCheckAgeSeconds": check_age}
