"""`GET /api/v1/me/ai-audit`: the signed-in user's decrypt-audit rows, as the TypeScript service
serves them.

Authentication is shared-hono's `authMiddleware` (an EdDSA JWT from mana-auth, `http_api/jwt.py`)
with its exact 401 text bodies; there is deliberately no dev bypass (`DEV_BYPASS_AUTH`). Unlike
the TypeScript service (which sent no CORS headers), the browser's cross-origin call works:
origins listed in `MANA_AI_CORS_ORIGINS` get CORS headers and an answered preflight.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Collection
from typing import Any, TypedDict

import asyncpg
import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio

from http_api.jwt import Claims, JwksCache, JwtRejected, allowed_issuers, authenticate
from planner import iso_ms
from settings import Settings
from store.audit import AuditRow, read_audit_rows
from store.errors import StoreError

__all__ = ["AUDIT_PATH", "AuditRowJson", "audit_row_json", "parse_limit", "register_audit"]

log = logging.getLogger(__name__)

AUDIT_PATH = "/api/v1/me/ai-audit"
MISSING_HEADER = "Missing authorization header"
MISSING_SUBJECT = "Token missing subject claim"
INVALID_TOKEN = "Invalid or expired token"
DEFAULT_LIMIT = 200
MAX_LIMIT = 1000
READ_TIMEOUT_S = 10.0
_TEXT = "text/plain; charset=UTF-8"  # what Hono's HTTPException renders
_LEADING_INT = re.compile(r"([+-]?)([0-9]+)")


class AuditRowJson(TypedDict):
    id: str
    missionId: str
    iterationId: str | None
    tableName: str
    recordId: str
    status: str
    reason: str | None
    ts: str


def parse_limit(raw: str | None) -> int:
    """JS `parseInt(raw, 10)` (the leading integer), 200 when there is none, clamped to [1, 1000]."""
    found = None if raw is None else _LEADING_INT.match(raw.lstrip())
    if found is None:
        return DEFAULT_LIMIT
    sign, digits = found.groups()
    digits = digits.lstrip("0") or "0"
    value = MAX_LIMIT + 1 if len(digits) > 6 else int(digits)  # no int() of a 5000-digit string
    return max(1, min(MAX_LIMIT, -value if sign == "-" else value))


def audit_row_json(row: AuditRow) -> AuditRowJson:
    return {"id": str(row.id), "missionId": row.mission_id, "iterationId": row.iteration_id,
            "tableName": row.table_name, "recordId": row.record_id, "status": row.status,
            "reason": row.reason, "ts": iso_ms(row.ts)}


def _text(body: str, status: int) -> Response:
    return Response(body, status=status, content_type=_TEXT)


def register_audit(app: QuartTrio, pool: asyncpg.Pool, jwks: JwksCache | None, settings: Settings) -> None:
    """Add the audit route; without a `JwksCache` every token is refused (fail closed)."""
    issuers = allowed_issuers(settings.jwt_issuer, settings.mana_auth_url)
    origins = frozenset(settings.cors_origins)
    if jwks is None:
        log.warning("audit.jwks_not_configured")

    @app.route(AUDIT_PATH, methods=["GET", "OPTIONS"], provide_automatic_options=False)
    async def ai_audit() -> Any:
        if request.method == "OPTIONS":
            return Response("", status=204)  # the CORS headers come from `_cors` below
        outcome = await _claims(request.headers.get("Authorization"), jwks, issuers, settings.jwt_audience)
        if isinstance(outcome, Response):
            return outcome
        mission_id = request.args.get("missionId") or None  # `?missionId=` is no filter, as in JS
        limit = parse_limit(request.args.get("limit"))
        try:
            with trio.fail_after(READ_TIMEOUT_S):
                rows = await read_audit_rows(pool, outcome.subject, mission_id, limit)
        except (StoreError, trio.TooSlowError) as exc:
            log.error("audit.read_failed", extra={"user_id": outcome.subject, "error": repr(exc)})
            return _text("Internal Server Error", 500)
        return jsonify({"rows": [audit_row_json(r) for r in rows]})

    @app.after_request
    async def _cors(response: Response) -> Response:
        if request.path != AUDIT_PATH or not origins:
            return response
        response.vary.add("Origin")
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = "GET, OPTIONS"
                response.headers["Access-Control-Allow-Headers"] = "Authorization"
                response.headers["Access-Control-Max-Age"] = "600"
        return response


async def _claims(authorization: str | None, jwks: JwksCache | None, issuers: Collection[str],
                  audience: str) -> Claims | Response:
    if authorization is None or not authorization.startswith("Bearer "):
        return _text(MISSING_HEADER, 401)
    if jwks is None:
        return _text(INVALID_TOKEN, 401)
    outcome = await authenticate(authorization[len("Bearer "):], jwks, now=time.time(), issuers=issuers,
                                 audience=audience)
    if isinstance(outcome, JwtRejected):
        log.debug("auth.rejected", extra={"reason": outcome.reason})
        return _text(MISSING_SUBJECT if outcome.reason == "missing-subject" else INVALID_TOKEN, 401)
    return outcome
