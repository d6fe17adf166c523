"""Dead slots across users, for scripts: `GET /internal/dead-slots` (a keyset-paged list) and
`POST /internal/dead-slots/retry|discard` (bulk recovery), behind the service-key gate of
`http_api/app.py`. The console's bulk actions (`http_api/console.py`) run `run_bulk` too.

A bulk action names its scope in a JSON body — `{"userId": …}`, `{"userId": …, "agentId": …}`
or `{"all": true}`; an empty body names nothing and is refused. It goes in batches
(`store.dead_slots`), logs one line (`dead_slots.retried` / `dead_slots.discarded`: who, the
scope, the counts), reads the run-ledger gauges again, and a retry wakes the scheduler.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from typing import Any

import asyncpg
import trio
from quart import jsonify, request
from quart_trio import QuartTrio

from actors.snapshot import SnapshotActor
from http_api.audit import parse_limit
from http_api.console_actions import DB_FAILURES, DB_TIMEOUT_S, BodyRefused, read_body
from observability.redact import Redactor
from planner import iso_ms
from settings import Settings
from store.dead_slots import START, BulkAction, BulkResult, DeadSlotRow, DeadSlotScope, Key, dead_slots_page
from store.dead_slots import recover_dead_slots

__all__ = ["BULK_TIME_LIMIT_S", "ScopeRefused", "bulk_json", "decode_cursor", "encode_cursor",
           "parse_scope", "register_dead_slots", "run_bulk"]

log = logging.getLogger(__name__)

BULK_TIME_LIMIT_S = 30.0  # one request's bulk work; `complete: false` past it (call again to go on)
MAX_CURSOR_CHARS = 4096
NO_SCOPE = 'name the dead slots: {"userId": "…"}, {"userId": "…", "agentId": "…"} or {"all": true}'
# what may not be in an id sent in a body (the gate checks route and query parameters alike)
_UNCLEAN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_EVENTS = {"retry": "dead_slots.retried", "discard": "dead_slots.discarded"}


class ScopeRefused(ValueError):
    """The request does not name a scope of dead slots the routes act on."""


def parse_scope(body: bytes) -> DeadSlotScope:
    """The scope a bulk action's JSON body names; `ScopeRefused` for anything else (an empty
    body, `{}` and `{"all": false}` name nothing)."""
    if not body.strip():
        raise ScopeRefused(NO_SCOPE)
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ScopeRefused("the body is not JSON") from exc
    if not isinstance(parsed, dict):
        raise ScopeRefused(NO_SCOPE)
    unknown = sorted(set(parsed) - {"userId", "agentId", "all"})
    if unknown:
        raise ScopeRefused(f"unknown field {unknown[0]!r}; " + NO_SCOPE)
    user_id, agent_id = parsed.get("userId"), parsed.get("agentId")
    if "all" in parsed:
        if parsed["all"] is not True or user_id is not None or agent_id is not None:
            raise ScopeRefused('"all" must be true, and alone')
        return DeadSlotScope()
    if user_id is None:
        raise ScopeRefused(NO_SCOPE)
    return scope_of(_id(user_id, "userId"), None if agent_id is None else _id(agent_id, "agentId"))


def scope_of(user_id: str | None, agent_id: str | None) -> DeadSlotScope:
    if agent_id is not None and user_id is None:
        raise ScopeRefused("an agent is named with its user: userId and agentId")
    return DeadSlotScope(user_id, agent_id)


def _id(value: object, name: str) -> str:
    if not isinstance(value, str) or not value or _UNCLEAN.search(value):
        raise ScopeRefused(f"{name} must be a non-empty string without control characters")
    return value


def encode_cursor(key: Key) -> str:
    """An opaque `after` value: the key of the last slot of a page."""
    return base64.urlsafe_b64encode(json.dumps(list(key), ensure_ascii=False).encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(raw: str) -> Key:
    """The key an `after` value names; `ScopeRefused` when it is not one `encode_cursor` made."""
    try:
        if len(raw) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        key = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ScopeRefused("after is not a cursor this endpoint returned") from exc
    if (not isinstance(key, list) or len(key) != 3 or not all(isinstance(k, str) for k in key)
            or any(_UNCLEAN.search(k) for k in key)):
        raise ScopeRefused("after is not a cursor this endpoint returned")
    return (key[0], key[1], key[2])


async def run_bulk(pool: asyncpg.Pool, snapshots: SnapshotActor, result: BulkResult, who: dict[str, str]) -> None:
    """Retry or discard the open dead slots of `result.scope` (at most `BULK_TIME_LIMIT_S` of
    batches) counting into `result`, log one line with `who` asked, wake the scheduler for
    retried slots and read the gauges.

    Raises what `recover_dead_slots` raises (`DB_FAILURES`); the line is logged all the same,
    with what was done before (also when the request is cancelled)."""
    action, scope = result.action, result.scope
    error: str | None = "cancelled"
    try:
        await recover_dead_slots(pool, result, time_limit_s=BULK_TIME_LIMIT_S, batch_timeout_s=DB_TIMEOUT_S)
        error = None
    except DB_FAILURES as exc:
        error = type(exc).__name__
        raise
    finally:
        log.info(_EVENTS[action], extra={**who, **scope.as_log(), "slots": result.changed,
                                         "superseded": result.superseded, "batches": result.batches,
                                         "complete": result.complete, "error": error})
        if action == "retry" and result.changed:
            snapshots.due_again(0.0)  # due now: the next cycle need not wait for the interval
    if result.changed:
        await snapshots.observe_ledger()


def bulk_json(result: BulkResult) -> dict[str, Any]:
    scope = result.scope
    body: dict[str, Any] = {"action": result.action,
                            "scope": {"all": scope.user_id is None, "userId": scope.user_id,
                                      "agentId": scope.agent_id}}
    if result.action == "retry":
        body.update(retried=result.changed, superseded=result.superseded)
    else:
        body.update(discarded=result.changed)
    body.update(batches=result.batches, complete=result.complete)
    return body


def register_dead_slots(app: QuartTrio, pool: asyncpg.Pool, snapshots: SnapshotActor, settings: Settings) -> None:
    redact = Redactor(settings.secrets())

    def slot_json(slot: DeadSlotRow) -> dict[str, Any]:
        return {"userId": slot.user_id, "agentId": slot.agent_id, "missionId": slot.mission_id,
                "dueSlot": slot.due_slot, "attempts": slot.attempts, "errorKind": slot.error_kind,
                "lastError": None if slot.last_error is None else redact(slot.last_error),
                "diedAt": iso_ms(slot.died_at) if slot.died_at else None, "retryable": slot.current}

    @app.get("/internal/dead-slots")
    async def list_dead_slots() -> Any:
        try:
            scope = scope_of(request.args.get("user") or None, request.args.get("agent") or None)
            after = decode_cursor(request.args["after"]) if request.args.get("after") else START
        except ScopeRefused as exc:
            return jsonify({"error": str(exc)}), 400
        limit = parse_limit(request.args.get("limit"))
        try:
            with trio.fail_after(DB_TIMEOUT_S):
                page = await dead_slots_page(pool, scope, after, limit + 1)
        except DB_FAILURES:
            return jsonify({"error": "the database did not answer"}), 503
        more = len(page) > limit
        page = page[:limit]
        return jsonify({"deadSlots": [slot_json(s) for s in page],
                        "nextCursor": encode_cursor(page[-1].key) if more else None})

    @app.post("/internal/dead-slots/<any(retry, discard):action>")
    async def bulk_action(action: BulkAction) -> Any:
        try:
            scope = parse_scope(await read_body())
        except (BodyRefused, ScopeRefused) as exc:
            return jsonify({"error": str(exc)}), 400
        result = BulkResult(action, scope)
        try:
            await run_bulk(pool, snapshots, result, {"via": "api", "client": request.remote_addr or "?"})
        except DB_FAILURES:
            return jsonify({**bulk_json(result), "error": "the database did not answer"}), 503
        return jsonify(bulk_json(result)), 200
