"""The operator's two actions on a dead slot, shared by the console's forms and the JSON API.

`POST /internal/missions/{userId}/{missionId}/retry|discard` (behind the service-key gate of
`http_api/app.py`) names the slot as `?dueSlot=` or a JSON body `{"dueSlot": "…"}`; without one
the mission's dead slot at its current `nextRunAt` is meant (else its newest dead slot).
Every change is logged as one line: `console.slot_retried` or `console.slot_discarded`; the
run-ledger gauges are read again at once, and a retried slot wakes the scheduler.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

import asyncpg
import trio
from quart import jsonify, request
from quart_trio import QuartTrio

from actors.snapshot import SnapshotActor
from store.errors import DATABASE_ERRORS
from store.inspect import SlotAction, discard_dead_slot, retry_dead_slot

log = logging.getLogger(__name__)

Action = Literal["retry", "discard"]
MAX_BODY_BYTES = 4096
BODY_TIMEOUT_S = 10.0
DB_TIMEOUT_S = 10.0
DB_FAILURES: tuple[type[Exception], ...] = (*DATABASE_ERRORS, trio.TooSlowError)  # "the database did not answer"

# what each outcome means, for people and scripts; the HTTP status of the JSON API
OUTCOMES: dict[str, tuple[int, str]] = {
    "retried": (200, "The slot will run again in the next cycle."),
    "discarded": (200, "The slot was discarded: it stays dead and leaves the list."),
    "no-dead-slot": (404, "There is no such dead slot."),
    "not-dead": (409, "The slot is not dead (it was retried or planned meanwhile)."),
    "already-discarded": (409, "The slot was discarded already."),
    "superseded": (409, "The mission has moved on to another due slot (or was deleted): this one cannot run"
                        " again. Discard it instead."),
}


class BodyRefused(Exception):
    """The request body is too large, too slow, or not what the route reads."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


async def read_body(max_bytes: int = MAX_BODY_BYTES, timeout_s: float = BODY_TIMEOUT_S) -> bytes:
    """The request body, at most `max_bytes`, within `timeout_s` (else `BodyRefused`)."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise BodyRefused("the request body is too large")
    data = bytearray()
    with trio.move_on_after(timeout_s) as scope:
        async for chunk in request.body:
            data.extend(chunk)
            if len(data) > max_bytes:
                raise BodyRefused("the request body is too large")
    if scope.cancelled_caught:
        raise BodyRefused("the request body did not arrive in time")
    return bytes(data)


async def act(pool: asyncpg.Pool, snapshots: SnapshotActor, action: Action, user_id: str, mission_id: str,
              due_slot: str | None, *, via: str) -> SlotAction:
    """Retry or discard one dead slot; a change is logged with who asked (`via`: console, api)."""
    with trio.fail_after(DB_TIMEOUT_S):
        if action == "retry":
            result = await retry_dead_slot(pool, user_id, mission_id, due_slot)
        else:
            result = await discard_dead_slot(pool, user_id, mission_id, due_slot)
    context = {"user_id": user_id, "mission_id": mission_id, "due_slot": result.due_slot, "via": via,
               "client": request.remote_addr or "?"}
    if result.outcome == "retried":
        log.info("console.slot_retried", extra=context)
        snapshots.due_again(0.0)  # due now: the next cycle need not wait for the interval
    elif result.outcome == "discarded":
        log.info("console.slot_discarded", extra=context)
    if result.outcome in ("retried", "discarded"):
        await snapshots.observe_ledger()
    return result


def register_slot_actions(app: QuartTrio, pool: asyncpg.Pool, snapshots: SnapshotActor) -> None:
    @app.post("/internal/missions/<user_id>/<mission_id>/<any(retry, discard):action>")
    async def slot_action(user_id: str, mission_id: str, action: Action) -> Any:
        try:
            due_slot = await _named_slot()
        except BodyRefused as exc:
            return jsonify({"error": str(exc)}), 400
        try:
            result = await act(pool, snapshots, action, user_id, mission_id, due_slot, via="api")
        except DB_FAILURES:
            return jsonify({"error": "the database did not answer"}), 503
        status, message = OUTCOMES[result.outcome]
        body = {"userId": user_id, "missionId": mission_id, "dueSlot": result.due_slot, "outcome": result.outcome}
        return jsonify(body if status == 200 else {**body, "error": message}), status


async def _named_slot() -> str | None:
    """`?dueSlot=`, else a JSON body's `dueSlot`, else None (the mission's current dead slot)."""
    body = await read_body()
    if "dueSlot" in request.args:
        return request.args["dueSlot"] or None
    if not body.strip():
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyRefused("the body is not JSON") from exc
    slot = parsed.get("dueSlot") if isinstance(parsed, dict) else None
    if slot is not None and (not isinstance(slot, str) or "\x00" in slot):
        raise BodyRefused("dueSlot must be a string")
    return slot or None
