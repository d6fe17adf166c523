"""Handing claims back to the run ledger, contained.

A claim goes back (without using an attempt) when its mission will not run now: a skip
decision, a full mailbox, shutdown, a cancelled run, a cycle that failed before delivering it.
Database trouble while doing so is retried a few times within a few seconds; then it is given
up — one log line (`claim.hand_back_failed`) and `mana_ai_ledger_write_failures_total` — and
the slot is left to its lease, which nobody renews any more: it is due again when the lease
expires. The error never reaches the caller, so it never ends an actor or a cycle.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import asyncpg
import trio

from actors.messages import MissionDue
from observability.metrics import Metrics
from store.errors import DATABASE_ERRORS
from store.runs import Claim, release_claim, release_claims

log = logging.getLogger(__name__)

_ERRORS: tuple[type[Exception], ...] = (*DATABASE_ERRORS, trio.TooSlowError)
TRIES = 3
_TRY_TIMEOUT_S = 2.5
_BACKOFF_S = 0.2  # before the second try, doubled before the third


async def _with_retries(write: str, metrics: Metrics, fields: dict[str, object],
                        statement: Callable[[], Awaitable[object]]) -> bool:
    error: Exception | None = None
    for attempt in range(TRIES):
        if attempt:
            await trio.sleep(_BACKOFF_S * 2 ** (attempt - 1))
        try:
            with trio.fail_after(_TRY_TIMEOUT_S):
                await statement()
            return True
        except _ERRORS as exc:
            error = exc
    metrics.ledger_write_failures.labels(write=write).inc()
    log.error("claim.hand_back_failed", extra={**fields, "tries": TRIES, "error": _describe(error),
                                               "then": "left to its lease"})
    return False


def mission_context(due: MissionDue) -> dict[str, object]:
    """The ids a hand-back's log line names."""
    return {"mission": due.mission.id, "user": due.mission.user_id,
            "agent": due.agent.id if due.agent else "legacy", "slot": due.claim.due_slot}


async def hand_back(pool: asyncpg.Pool, metrics: Metrics, claim: Claim, reason: str,
                    context: dict[str, object]) -> bool:
    """Release `claim` (fenced by its token), retried; False when given up (then logged and counted).

    Bounded: at most about 8 s. Never raises for database trouble."""
    return await _with_retries("release", metrics, {**context, "reason": reason},
                               partial(release_claim, pool, claim, reason))


async def hand_back_all(pool: asyncpg.Pool, metrics: Metrics, claims: Sequence[Claim], reason: str) -> bool:
    """Release several claims in one statement, retried; as `hand_back`."""
    if not claims:
        return True
    return await _with_retries("cycle-release", metrics, {"claims": len(claims), "reason": reason},
                               partial(release_claims, pool, claims, reason))


def _describe(exc: Exception | None) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
