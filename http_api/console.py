"""The operator console under `/ui`: server-rendered pages over the daemon's own data (docs/console.md).

Pages: the overview (health, recent cycles, ledger counts, planned missions per minute, every
agent), one user's missions with why each is (not) due, and the dead slots with Retry and
Discard, one by one or in bulk (per user, per agent, all: each after a confirmation page). Each page's tables are refreshed in place by `static/console.js` polling
`/ui/live/...`. `GET /ui` and `POST /ui/login` are open (the login form); everything else needs
the session cookie and answers a redirect to the login without it, never data. Forms that change
something carry the session's CSRF token. Reads go through the same store functions as the
inspection routes, and the missions page shows the same verdicts (`actors.explain.explain_missions`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qs, quote

import asyncpg
import trio
from quart import Blueprint, Response, g, redirect, render_template, request
from quart_trio import QuartTrio

from actors.explain import CapsUse, budgeted_agents, explain_missions
from actors.registry import AgentRegistry
from actors.snapshot import SnapshotActor
from http_api.auth import service_key_ok
from http_api.console_actions import DB_FAILURES, DB_TIMEOUT_S, OUTCOMES, Action, BodyRefused, act, read_body
from http_api.console_auth import LoginLimiter, Session, SessionSigner
from http_api.console_views import (
    agent_rows, bar_chart, cycle_rows, digits, health_view, iso_or_dash, llm_queue_view, reason_words,
)
from http_api.console_views import SpendView, spend_view
from http_api.console_views import BULK_GROUP_ROWS, BULK_VERBS, bulk_notice, dead_groups
from http_api.dead_slots import ScopeRefused, run_bulk, scope_of
from http_api.inspection import read_caps
from observability.redact import Redactor
from planner import LEGACY_AI_PRINCIPAL
from planner.iteration import iso_ms
from settings import Settings
from store.inspect import (
    all_agents, ledger_counts, open_dead_slots, planned_per_minute, usage_24h_of, user_missions,
)
from store.dead_slots import BulkAction, BulkResult, DeadSlotScope, count_dead_slots, dead_slots_per_user
from store.inspect import AgentSnapshotRow, spend_24h
from store.records import Agent
from store.research_jobs import jobs_of_user
from store.usage import usage_24h
from upstream.fair_slots import WaitingUser

log = logging.getLogger(__name__)

COOKIE = "mana_ai_console"
REFRESH_S = 5
AGENTS_LIMIT = 500
SPEND_USERS = 50  # users shown in the overview's spend section, the most used first
DEAD_LIMIT = 200
CHART_MINUTES = 60
Health = Callable[[], Awaitable[tuple[dict[str, Any], bool]]]

# no inline script or style, nothing from elsewhere, never framed
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
# endpoints served without a session
_OPEN = {"console.index", "console.login", "console.logout_get", "console.static"}
_STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8",
           "favicon.svg": "image/svg+xml"}

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class ConsoleDeps:
    pool: asyncpg.Pool
    settings: Settings
    snapshots: SnapshotActor
    registry: AgentRegistry
    health: Health  # /health's body and verdict, computed as /health computes them
    llm_queue: Callable[[], list[WaitingUser]] | None = None  # who waits for an LLM slot (None: not shown)


def register_console(app: QuartTrio, deps: ConsoleDeps) -> None:
    """Add the console's routes, its security headers, and its templates (always autoescaped)."""
    app.jinja_options = {**app.jinja_options, "autoescape": True}
    console = _Console(deps)
    bp = Blueprint("console", __name__, url_prefix="/ui", template_folder="templates")
    redact = Redactor(deps.settings.secrets())
    bp.add_app_template_filter(lambda text: None if text is None else redact(str(text)), "redact")
    bp.add_app_template_filter(digits, "digits")
    bp.add_app_template_filter(reason_words, "reason_words")
    bp.add_app_template_filter(lambda text: quote(str(text), safe=""), "path_segment")
    bp.before_request(console.gate)
    bp.add_url_rule("", "index", console.index, methods=["GET"])
    bp.add_url_rule("/", "index_slash", console.index, methods=["GET"])
    bp.add_url_rule("/login", "login", console.login, methods=["GET", "POST"])
    bp.add_url_rule("/logout", "logout", console.logout, methods=["POST"])
    bp.add_url_rule("/logout", "logout_get", console.logout_get, methods=["GET"])
    bp.add_url_rule("/missions", "missions_search", console.missions_search, methods=["GET"])
    bp.add_url_rule("/missions/<user_id>", "missions", console.missions, methods=["GET"])
    bp.add_url_rule("/dead", "dead", console.dead, methods=["GET"])
    bp.add_url_rule("/dead/<any(retry, discard):action>", "dead_action", console.dead_action, methods=["POST"])
    bp.add_url_rule("/dead/bulk", "dead_bulk_confirm", console.dead_bulk_confirm, methods=["GET"])
    bp.add_url_rule("/dead/bulk/<any(retry, discard):action>", "dead_bulk", console.dead_bulk, methods=["POST"])
    bp.add_url_rule("/live/overview", "live_overview", console.live_overview, methods=["GET"])
    bp.add_url_rule("/live/missions/<user_id>", "live_missions", console.live_missions, methods=["GET"])
    bp.add_url_rule("/live/dead", "live_dead", console.live_dead, methods=["GET"])
    bp.add_url_rule("/static/<name>", "static", console.static, methods=["GET"])
    app.register_blueprint(bp)

    @app.after_request
    async def _console_headers(response: Response) -> Response:
        if request.path == "/ui" or request.path.startswith("/ui/"):
            response.headers["Content-Security-Policy"] = CSP
            response.headers["X-Frame-Options"] = "DENY"
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Referrer-Policy"] = "no-referrer"
            if request.url_rule is None or request.url_rule.endpoint != "console.static":
                response.headers["Cache-Control"] = "no-store"
        return response


class _Console:
    def __init__(self, deps: ConsoleDeps) -> None:
        self._deps = deps
        self._pool = deps.pool
        self._signer = SessionSigner(deps.settings.service_key)
        self._limiter = LoginLimiter()
        self._static = {name: resources.files("http_api").joinpath("static", name).read_bytes() for name in _STATIC}
        self._etags = {name: hashlib.sha256(data).hexdigest()[:16] for name, data in self._static.items()}

    # -- the session gate, login and logout -----------------------------------------------

    async def gate(self) -> Any:
        session = self._signer.verify(request.cookies.get(COOKIE), time.time())
        g.console_session = session
        if session is None and request.endpoint not in _OPEN:
            return redirect("/ui", 303)  # never data without a session; a POST changes nothing
        return None

    async def index(self) -> Any:
        session: Session | None = g.console_session
        if session is None:
            return await self._login_page(None, 200)
        return await self._page("console/overview.html", session, "overview", live="/ui/live/overview",
                                **await self._overview())

    async def login(self) -> Any:
        if request.method == "GET":  # a reload after a failed login, a bookmark
            return redirect("/ui", 303)
        client = request.remote_addr or "?"
        # the attempt is taken before the first await: parallel logins cannot all pass the check
        wait = self._limiter.reserve(client, time.time())
        if wait > 0:
            log.warning("console.login_failed", extra={"client": client, "reason": "rate-limited"})
            response = await self._login_page(f"Too many failed attempts: try again in {math.ceil(wait)} s.", 429)
            response.headers["Retry-After"] = str(math.ceil(wait))
            return response
        try:
            key = _form(await read_body()).get("key")
        except BodyRefused:  # the attempt stays counted
            return await self._login_page("The form could not be read.", 400)
        if not service_key_ok(key, self._deps.settings.service_key):  # the attempt stays counted
            log.warning("console.login_failed", extra={"client": client, "reason": "wrong-key"})
            return await self._login_page("That is not the service key.", 401)
        self._limiter.succeeded(client)
        value, _ = self._signer.issue(time.time())
        entered = redirect("/ui", 303)
        entered.set_cookie(COOKIE, value, max_age=int(self._signer.ttl_s), path="/ui", httponly=True,
                           samesite="Strict", secure=_over_https())
        log.info("console.logged_in", extra={"client": client})
        return entered

    async def logout_get(self) -> Any:
        """A link, an <img src>, a prefetch: a GET never ends a session."""
        return Response("Log out with the console's button (a POST with its form).", status=405,
                        headers={"Allow": "POST"}, content_type="text/plain; charset=utf-8")

    async def logout(self) -> Any:
        """Only a POST with the session's CSRF token ends it."""
        session: Session = g.console_session
        if await self._checked_form(session) is None:
            return await self._refused()
        self._signer.revoke(session, time.time())
        response = redirect("/ui", 303)
        response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="Strict", secure=_over_https())
        log.info("console.logged_out", extra={"client": request.remote_addr or "?"})
        return response

    async def _login_page(self, error: str | None, status: int) -> Response:
        html = await render_template("console/login.html", error=error, csrf=None, page="login",
                                     instance=self._deps.settings.instance_id)
        return Response(html, status=status, content_type="text/html; charset=utf-8")

    async def _refused(self) -> Response:
        html = await render_template("console/refused.html", csrf=None, page="refused",
                                     instance=self._deps.settings.instance_id)
        return Response(html, status=403, content_type="text/html; charset=utf-8")

    # -- pages and their live fragments ---------------------------------------------------

    async def live_overview(self) -> Any:
        return await self._page("console/_overview.html", g.console_session, "overview", **await self._overview())

    async def missions_search(self) -> Any:
        user = request.args.get("user", "").strip()
        if user:
            return redirect("/ui/missions/" + quote(user, safe=""), 303)
        return await self._page("console/missions.html", g.console_session, "missions", user_id=None,
                                missions=[], checked_at=None)

    async def missions(self, user_id: str) -> Any:
        context = await self._missions(user_id)
        status = 503 if context["missions"] is None else 404 if not context["missions"] else 200
        return await self._page("console/missions.html", g.console_session, "missions",
                                live="/ui/live/missions/" + quote(user_id, safe=""), status=status, **context)

    async def live_missions(self, user_id: str) -> Any:
        return await self._page("console/_missions.html", g.console_session, "missions",
                                **await self._missions(user_id))

    async def dead(self) -> Any:
        done = request.args.get("done")
        notice = OUTCOMES[done][1] if done in OUTCOMES else None
        notice_ok = done in ("retried", "discarded")
        bulk = request.args.get("bulk")
        if bulk in BULK_VERBS:  # after a bulk action (the counts only say what the redirect said)
            notice = bulk_notice(bulk, _count(request.args.get("changed")), _count(request.args.get("superseded")),
                                 request.args.get("complete") == "1")
            notice_ok = True
        return await self._page("console/dead.html", g.console_session, "dead", live="/ui/live/dead",
                                notice=notice, notice_ok=notice_ok, **await self._dead())

    async def live_dead(self) -> Any:
        return await self._page("console/_dead.html", g.console_session, "dead", **await self._dead())

    async def _checked_form(self, session: Session) -> dict[str, str] | None:
        """The posted form, or None when it lacks the session's CSRF token (or cannot be read)."""
        try:
            fields = _form(await read_body())
        except BodyRefused:
            return None
        return fields if self._signer.csrf_ok(session, fields.get("csrf")) else None

    async def dead_action(self, action: Action) -> Any:
        session: Session = g.console_session
        fields = await self._checked_form(session)
        if fields is None:
            return await self._refused()
        user_id, mission_id, slot = fields.get("user"), fields.get("mission"), fields.get("slot")
        if not user_id or not mission_id or not slot:
            return redirect("/ui/dead?done=no-dead-slot", 303)
        try:
            result = await act(self._pool, self._deps.snapshots, action, user_id, mission_id, slot, via="console")
        except DB_FAILURES:
            return await self._page("console/dead.html", session, "dead", notice="The database did not answer.",
                                    notice_ok=False, slots=None, total=0, status=503)
        return redirect(f"/ui/dead?done={result.outcome}", 303)

    async def dead_bulk_confirm(self) -> Any:
        """The confirmation step of a bulk action: what it will act on and how many slots; a GET
        changes nothing, the form it shows does (with the session's CSRF token)."""
        action = request.args.get("action")
        if action not in BULK_VERBS:
            return redirect("/ui/dead", 303)
        try:
            scope = _bulk_scope(request.args)
        except ScopeRefused:
            return redirect("/ui/dead", 303)
        count = await _read(count_dead_slots, self._pool, scope)
        return await self._page("console/dead_confirm.html", g.console_session, "dead", action=action,
                                verb=BULK_VERBS[action][0], count=count, scope_words=_scope_words(scope),
                                user_id=scope.user_id, agent_id=scope.agent_id, status=200 if count is not None else 503)

    async def dead_bulk(self, action: BulkAction) -> Any:
        session: Session = g.console_session
        fields = await self._checked_form(session)
        if fields is None:
            return await self._refused()
        try:
            scope = _bulk_scope(fields)
        except ScopeRefused:
            return redirect("/ui/dead", 303)
        result = BulkResult(action, scope)
        who = {"via": "console", "session": hashlib.sha256(session.nonce.encode()).hexdigest()[:12],
               "client": request.remote_addr or "?"}
        try:
            await run_bulk(self._pool, self._deps.snapshots, result, who)
        except DB_FAILURES:
            done = bulk_notice(action, result.changed, result.superseded, complete=True) if result.changed else ""
            return await self._page("console/dead.html", session, "dead", notice=f"The database did not answer. {done}",
                                    notice_ok=False, slots=None, total=0, groups=None, status=503)
        return redirect(f"/ui/dead?bulk={action}&changed={result.changed}&superseded={result.superseded}"
                        f"&complete={int(result.complete)}", 303)

    async def static(self, name: str) -> Any:
        if name not in _STATIC:
            return Response("not found", status=404, content_type="text/plain; charset=utf-8")
        response = Response(self._static[name], status=200, content_type=_STATIC[name])
        response.headers["Cache-Control"] = "no-cache"
        response.set_etag(self._etags[name])
        return await response.make_conditional(request)

    async def _page(self, template: str, session: Session, page: str, *, status: int = 200, **context: Any) -> Response:
        html = await render_template(template, csrf=self._signer.csrf_token(session), page=page,
                                     instance=self._deps.settings.instance_id, refresh_s=REFRESH_S, **context)
        return Response(html, status=status, content_type="text/html; charset=utf-8")

    # -- what the pages show --------------------------------------------------------------

    async def _overview(self) -> dict[str, Any]:
        body, _ = await self._deps.health()
        now = time.time()
        snapshots = await _read(all_agents, self._pool, AGENTS_LIMIT + 1)
        agents = usage = None
        if snapshots is not None:
            shown = snapshots[:AGENTS_LIMIT]
            usage = await _read(usage_24h_of, self._pool, [(a.user_id, a.agent_id) for a in shown])
            if usage is not None:
                agents = agent_rows(shown, self._deps.registry.actor_stats(), usage, now)
        spend = await self._spend(snapshots, body)
        counts = await _read(ledger_counts, self._pool)
        per_minute = await _read(planned_per_minute, self._pool, CHART_MINUTES)
        return {"health": health_view(body), "cycles": cycle_rows(self._deps.snapshots.recent_cycles(), now),
                "counts": counts, "chart": None if per_minute is None else bar_chart(per_minute),
                "agents": agents, "agents_truncated": snapshots is not None and len(snapshots) > AGENTS_LIMIT,
                "agents_limit": AGENTS_LIMIT, "spend": spend,
                "llm_queue": None if self._deps.llm_queue is None else llm_queue_view(self._deps.llm_queue())}

    async def _spend(self, snapshots: list[AgentSnapshotRow] | None, health: Mapping[str, Any]) -> SpendView | None:
        """Spend per user and agent over 24 h; None when the database did not answer."""
        rows = await _read(spend_24h, self._pool, SPEND_USERS)
        if rows is None:
            return None
        settings = self._deps.settings
        agents = {(a.user_id, a.agent_id): Agent.from_record(a.user_id, a.record) for a in snapshots or ()}
        budget = health.get("tokenBudget")
        return spend_view(rows, agents, user_cap=settings.user_max_tokens_per_day,
                          global_cap=settings.max_tokens_per_day,
                          paused=bool(isinstance(budget, Mapping) and budget.get("paused")),
                          limit=SPEND_USERS, legacy_id=LEGACY_AI_PRINCIPAL)

    async def _missions(self, user_id: str) -> dict[str, Any]:
        """The verdicts of `GET /internal/missions/{userId}` (both show `explain_missions`)."""
        found = await _read(user_missions, self._pool, user_id)
        if found is None:
            return {"user_id": user_id, "missions": None, "checked_at": None}
        if not found.missions or found.db_now is None:
            return {"user_id": user_id, "missions": [], "checked_at": None}
        used: dict[str, int] = {}
        for agent_id in budgeted_agents(found):
            usage = await _read(usage_24h, self._pool, user_id, agent_id)
            if usage is not None:
                used[agent_id] = usage.used
        settings = self._deps.settings
        caps = await _read(read_caps, self._pool, settings, user_id)
        jobs = {}
        if settings.mana_research_url is not None and settings.research_service_key is not None:
            jobs = await _read(jobs_of_user, self._pool, user_id) or {}
        rows = []
        for v in explain_missions(user_id, found, self._deps.registry.actor_stats(), used, jobs,
                                  caps or CapsUse()):
            m, agent, verdict = v.mission, v.agent, v.verdict
            title = m.record.get("title")
            next_run = m.record.get("nextRunAt")
            state = m.record.get("state")
            rows.append({
                "mission_id": m.mission_id, "title": title if isinstance(title, str) else None,
                "agent": agent.name if agent else (v.agent_id or "legacy"), "agent_id": v.agent_id,
                "state": "deleted" if m.tombstone else (state if isinstance(state, str) else "—"),
                "due_slot": m.run.due_slot if m.run else (next_run if isinstance(next_run, str) else None),
                "status": m.run.status if m.run else None, "attempts": m.run.attempts if m.run else None,
                "due": verdict.due, "reason": verdict.reason, "detail": verdict.detail})
        return {"user_id": user_id, "missions": rows, "checked_at": iso_ms(found.db_now)}

    async def _dead(self) -> dict[str, Any]:
        per_user = await _read(dead_slots_per_user, self._pool, BULK_GROUP_ROWS + 1)
        bulk = {"groups": None if per_user is None else dead_groups(
                    (r.user_id, r.agent_id, r.slots) for r in per_user[:BULK_GROUP_ROWS]),
                "groups_truncated": per_user is not None and len(per_user) > BULK_GROUP_ROWS,
                "groups_limit": BULK_GROUP_ROWS}
        found = await _read(open_dead_slots, self._pool, DEAD_LIMIT)
        if found is None:
            return {"slots": None, "total": 0, **bulk}
        slots, total = found
        return {"slots": [{"slot": s, "finished": iso_or_dash(s.finished_at)} for s in slots], "total": total,
                **bulk}


async def _read(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T | None:
    """A read for a page; None when the database fails or does not answer in time (the page says so)."""
    try:
        with trio.fail_after(DB_TIMEOUT_S):
            return await fn(*args, **kwargs)
    except DB_FAILURES:
        return None


def _form(body: bytes) -> dict[str, str]:
    """An urlencoded form's fields (the first value of each), at most 10 of them."""
    try:
        parsed = parse_qs(body.decode("utf-8"), max_num_fields=10, keep_blank_values=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BodyRefused("the form could not be read") from exc
    return {name: values[0] for name, values in parsed.items() if "\x00" not in values[0]}


def _bulk_scope(fields: Mapping[str, str]) -> DeadSlotScope:
    """The scope a bulk form or confirmation link names: `all=1`, or `user` (and `agent`); nothing
    named is no scope (`ScopeRefused`), never "all"."""
    user_id, agent_id = fields.get("user") or None, fields.get("agent") or None
    if fields.get("all") == "1":
        if user_id is not None or agent_id is not None:
            raise ScopeRefused("all, or a user")
        return DeadSlotScope()
    if user_id is None:
        raise ScopeRefused("no scope")
    return scope_of(user_id, agent_id)


def _scope_words(scope: DeadSlotScope) -> str:
    if scope.user_id is None:
        return "of every user"
    if scope.agent_id is None:
        return f"of user {scope.user_id}"
    return f"of agent {scope.agent_id} of user {scope.user_id}"


def _count(raw: str | None) -> int:
    """A count from the redirect after a bulk action (0 unless it is a small non-negative integer)."""
    return int(raw) if raw is not None and raw.isdigit() and len(raw) <= 9 else 0


def _over_https() -> bool:
    """Whether the browser talks HTTPS to us (directly, or to the proxy in front: X-Forwarded-Proto)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.scheme == "https" or forwarded == "https"
