"""LeaseKeeper: holds every claim this instance owns and renews all their leases in one statement.

A claim is held from the moment `claim_runs` returns it (`hold`, in the snapshot actor's
dispatch) until its owner has settled it and lets it go (`let_go`): planned, failed, handed back
(a skip, shutdown) or dropped. Time in a mailbox counts: a mission waiting for its agent's slot
keeps its lease, however long the missions before it take.

Every `lease_s / 3` one statement (`store.runs.renew_leases`) extends every held lease. A claim
that does not come back was lost (its lease lapsed and another instance took the slot over); the
keeper drops it: a queued mission then never starts (`holds` is False when its turn comes) and a
running one is cancelled through its `guard` scope and reports `mission.lease_lost`. A claim
whose owner is already settling it (`settling`: write-back, fail, release, each fenced by the
token) is not cancelled: the fenced write decides.

A renewal that fails with database or connection trouble (`DATABASE_ERRORS`, a timeout) is
logged (`lease.renew_failed`), counted (`mana_ai_lease_renewal_failures_total`) and retried after
a short backoff. Its missions run on untouched until their lease may have lapsed: `lease_s` after
the last renewal that succeeded was *sent* (the server's `now()` is later than that), less a small
margin, judged by the local clock. Only then are they given up, as if lost.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

import trio

from observability.metrics import Metrics
from store.errors import DATABASE_ERRORS
from store.runs import Claim

log = logging.getLogger(__name__)

_RENEW_ERRORS: tuple[type[Exception], ...] = (*DATABASE_ERRORS, trio.TooSlowError)
_FIRST_BACKOFF_S = 0.1    # after a failed renewal; doubles per failure in a row
_MAX_BACKOFF_S = 5.0
_MIN_TIMEOUT_S = 0.5      # one renewal round trip: a third of the lease, within these bounds
_MAX_TIMEOUT_S = 10.0
_CLOSE_TIMEOUT_S = 6.0    # at shutdown, how long to keep renewing claims still being handed back
                          # (a cancelled run's own bound for handing its claim back is 5 s)


class Renewer(Protocol):
    """Extends the given leases by `lease_s`; returns the tokens still held (`store.runs.renew_leases`)."""

    async def __call__(self, claims: Sequence[Claim], lease_s: float, /) -> set[UUID]: ...


@dataclass(frozen=True)
class LeaseStats:
    held: int
    renewals: int  # renewal statements that succeeded
    failures: int  # renewal attempts that failed (database, connection, timeout)
    lost: int      # claims dropped: not held any more, or given up after failed renewals


@dataclass
class _Held:
    claim: Claim
    safe_until: float                      # trio clock: surely ours until then
    guard: trio.CancelScope | None = None  # the running mission's, cancelled when the lease is lost
    settling: bool = False


class LeaseKeeper:
    """Owns the set of held claims; one per instance, run in the runtime's nursery."""

    def __init__(self, renew: Renewer, metrics: Metrics, *, lease_s: float) -> None:
        self._renew = renew
        self._metrics = metrics
        self._lease_s = lease_s
        self._interval_s = lease_s / 3
        self._margin_s = min(1.0, lease_s / 20)
        self._held: dict[UUID, _Held] = {}
        self._closing = False
        self._wake = trio.Event()
        self._renewals = 0
        self._failures = 0
        self._lost = 0

    # -- what owners call; never blocks ---------------------------------------------------

    def hold(self, claims: Iterable[Claim], *, claimed_at: float) -> None:
        """Keep these new claims' leases; `claimed_at` is when the claim was sent (trio clock)."""
        for claim in claims:
            self._held[claim.token] = _Held(claim, claimed_at + self._lease_s - self._margin_s)

    def holds(self, claim: Claim) -> bool:
        """Whether the claim is still ours (False once lost or let go)."""
        return claim.token in self._held

    def guard(self, claim: Claim) -> trio.CancelScope:
        """A scope for the claim's run that the keeper cancels when the lease is lost (at once if it was)."""
        scope = trio.CancelScope()
        held = self._held.get(claim.token)
        if held is None:
            scope.cancel()
        else:
            held.guard = scope
        return scope

    def settling(self, claim: Claim) -> None:
        """The owner is settling the claim with a fenced write: losing it no longer cancels the run."""
        held = self._held.get(claim.token)
        if held is not None:
            held.settling = True

    def let_go(self, claim: Claim) -> None:
        """The claim is settled, handed back or dropped: stop renewing it. Idempotent."""
        self._held.pop(claim.token, None)
        if self._closing and not self._held:
            self._wake.set()

    def close(self) -> None:
        """No new claims will come: `run` returns once the last one is let go (bounded)."""
        self._closing = True
        self._wake.set()

    def stats(self) -> LeaseStats:
        return LeaseStats(len(self._held), self._renewals, self._failures, self._lost)

    # -- the task -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        next_at = trio.current_time() + self._interval_s
        close_by = math.inf
        failures = 0  # in a row
        while True:
            if self._closing:
                if not self._held:
                    return
                close_by = min(close_by, trio.current_time() + _CLOSE_TIMEOUT_S)
            with trio.move_on_at(min(next_at, close_by)):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            if now >= close_by:
                # every owner hands its claim back before this; what is left expires on its own
                log.warning("lease.abandoned", extra={"claims": len(self._held)})
                return
            if now < next_at:
                continue
            if not self._held:
                next_at = now + self._interval_s
            elif await self._renew_all(failures + 1):
                failures = 0
                next_at = trio.current_time() + self._interval_s
            else:
                failures += 1
                backoff = min(_FIRST_BACKOFF_S * 2 ** (failures - 1), _MAX_BACKOFF_S, self._interval_s)
                first_deadline = min((h.safe_until for h in self._held.values()), default=math.inf)
                next_at = min(trio.current_time() + backoff, first_deadline)

    async def _renew_all(self, attempt: int) -> bool:
        """One renewal statement for every held claim; False if it failed (the database's trouble)."""
        claims = [h.claim for h in self._held.values()]
        sent_at = trio.current_time()
        try:
            with trio.fail_after(min(max(self._interval_s, _MIN_TIMEOUT_S), _MAX_TIMEOUT_S)):
                still_held = await self._renew(claims, self._lease_s)
        except _RENEW_ERRORS as exc:
            self._failures += 1
            self._metrics.lease_renewal_failures.inc()
            now = trio.current_time()
            self._drop([h for h in self._held.values() if h.safe_until <= now], "renewals failed until expiry")
            safe_s = min((h.safe_until for h in self._held.values()), default=now) - now
            log.warning("lease.renew_failed", extra={"error": _describe(exc), "claims": len(claims),
                                                     "attempt": attempt, "safe_for_s": round(safe_s, 2)})
            return False
        self._renewals += 1
        lost = []
        for claim in claims:
            held = self._held.get(claim.token)
            if held is None:
                continue  # let go while the statement ran
            if claim.token in still_held:
                held.safe_until = sent_at + self._lease_s - self._margin_s
            elif held.settling:
                del self._held[claim.token]  # settled meanwhile; the owner's fenced write tells
            else:
                lost.append(held)
        self._drop(lost, "not held")
        return True

    def _drop(self, lost: list[_Held], reason: str) -> None:
        if not lost:
            return
        for held in lost:
            del self._held[held.claim.token]
            if held.guard is not None and not held.settling:
                held.guard.cancel()
        self._lost += len(lost)
        log.warning("lease.lost", extra={"claims": len(lost), "reason": reason})


def _describe(exc: Exception) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "renewal timed out"
    return f"{type(exc).__name__}: {exc}"
