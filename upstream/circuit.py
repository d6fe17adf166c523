"""A circuit breaker for the LLM: during an outage missions are parked, not failed.

    closed ──(`failures` outage failures in a row, from >= `min_users` users)──► open
    open ──(the probe delay has passed)──► probing ──(the probe was answered)──► closed
                                               └──(the probe failed)──► open, delay doubled (capped)
    open or probing ──(a call that was already running is answered)──► closed

Outage failures (``is_outage``) are those a mission's own content cannot explain on its own:
no connection, a connection dropped before or during the answer, a 5xx, a 429 (with or without
Retry-After: the LLM is overloaded for everyone) and a timed-out attempt. Everything else the
LLM answered (a 2xx, a 4xx other than 429, an unusable body) is evidence it is up: it resets the
count, and a mission's own fault keeps costing that mission an attempt as before.

One user's hostile input (a prompt on which the upstream fails with a 500 or times out) must not
stop planning for everyone, so a run of failures opens the circuit only when at least
`min_users` distinct users are among them, or when one of them is a connection that could not be
made at all (no prompt was sent: no content can cause that).

`Breaker` is the pure state machine (time is an argument). `LlmCircuit` is the trio-facing
wrapper: the mission runner asks it before each call (``admits``) and tells it how each call
ended; its ``run`` task probes one request at a time while the circuit is open, and it keeps the
metrics and writes one log line per transition.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import httpx
import trio

from observability.metrics import Metrics
from upstream.errors import LlmClosed, LlmError, LlmHttpError, LlmTimeout, LlmUnavailable

__all__ = ["CLOSED", "OPEN", "PROBING", "Breaker", "CircuitState", "LlmCircuit", "LlmCircuitOpen",
           "is_outage", "unsendable"]

log = logging.getLogger(__name__)

State = Literal["closed", "open", "probing"]
CLOSED: State = "closed"
OPEN: State = "open"
PROBING: State = "probing"


class LlmCircuitOpen(LlmError):
    """The LLM is down (the circuit is open): the mission is parked, its attempt not used."""


def is_outage(exc: BaseException) -> bool:
    """Whether a failed call says the LLM is down rather than that this mission's request is bad."""
    if isinstance(exc, LlmClosed | LlmCircuitOpen):
        return False
    if isinstance(exc, LlmHttpError):
        return exc.status == 429 or 500 <= exc.status < 600
    return isinstance(exc, LlmUnavailable | LlmTimeout)


def unsendable(exc: BaseException) -> bool:
    """No connection could be made: nothing of the request was sent, so its content is not the cause."""
    return isinstance(exc, LlmUnavailable) and isinstance(exc.__cause__, httpx.ConnectError | httpx.ConnectTimeout)


@dataclass(frozen=True)
class CircuitState:
    """What /health and the console show."""

    state: State
    failures_in_a_row: int
    opened_at: float | None  # unix time the circuit last opened (None: closed)
    next_probe_in_s: float | None  # while open
    last_error: str | None  # the kind of the last outage failure, never a response body


@dataclass
class Breaker:
    """The pure state machine; `now` is any monotonic clock in seconds."""

    failures: int = 5  # outage failures in a row that open the circuit; 0: never opens
    min_users: int = 2
    probe_base_s: float = 2.0
    probe_max_s: float = 60.0
    state: State = CLOSED
    streak: int = 0
    users: set[str] = field(default_factory=set)
    unattributable: bool = False  # a connection that could not be made is in the streak
    probe_delay_s: float = 0.0
    probe_at: float = math.inf

    def succeeded(self) -> State | None:
        """The LLM answered; the new state when it changed."""
        self.streak, self.users, self.unattributable = 0, set(), False
        if self.state == CLOSED:
            return None
        self.state, self.probe_at, self.probe_delay_s = CLOSED, math.inf, 0.0
        return CLOSED

    def failed(self, user: str, now: float, *, unsendable: bool = False) -> State | None:
        """An outage failure of `user`'s call; OPEN when this one opens the circuit."""
        if self.state != CLOSED or self.failures == 0:
            return None  # already open: the probe decides
        self.streak += 1
        self.users.add(user)
        self.unattributable = self.unattributable or unsendable
        if self.streak < self.failures or (len(self.users) < self.min_users and not self.unattributable):
            return None
        self.state, self.probe_delay_s = OPEN, self.probe_base_s
        self.probe_at = now + self.probe_delay_s
        return OPEN

    def probe_started(self) -> State | None:
        if self.state != OPEN:
            return None
        self.state = PROBING
        return PROBING

    def probe_failed(self, now: float) -> State | None:
        """The probe met an outage: open again, the next probe after twice the delay (capped)."""
        if self.state != PROBING:
            return None
        self.state = OPEN
        self.probe_delay_s = min(self.probe_max_s, max(self.probe_delay_s * 2, self.probe_base_s))
        self.probe_at = now + self.probe_delay_s
        return OPEN


Probe = Callable[[], Awaitable[LlmError | None]]  # None: the LLM answered


class LlmCircuit:
    """The breaker between the mission runner and the LLM, with its probe task (``run``)."""

    def __init__(self, breaker: Breaker, metrics: Metrics, *, probe: Probe,
                 on_closed: Callable[[], None] = lambda: None,
                 wall_clock: Callable[[], float] | None = None) -> None:
        self._breaker = breaker
        self._metrics = metrics
        self._probe = probe
        self.on_closed = on_closed  # told when dispatch may resume (the snapshot actor's due timer)
        self._wall = wall_clock or time.time
        self._changed = trio.Event()
        self._opened_at: float | None = None
        self._last_error: str | None = None
        self._parked = 0  # claims handed back since the circuit opened
        self._scope: trio.CancelScope | None = None
        self._closing = False
        metrics.llm_circuit_open.set(0)

    # -- what the runner asks and tells ----------------------------------------------------

    @property
    def state(self) -> State:
        return self._breaker.state

    def admits(self) -> bool:
        """Whether a mission may call the LLM now (the circuit is closed)."""
        return self._breaker.state == CLOSED

    def succeeded(self) -> None:
        self._transition(self._breaker.succeeded(), None)

    def failed(self, exc: Exception, user: str) -> bool:
        """Tell a failed call; True when the mission is to be parked (its attempt not used)."""
        if isinstance(exc, LlmCircuitOpen):
            return True
        if not is_outage(exc):
            if not isinstance(exc, LlmClosed):
                self.succeeded()  # it answered: up, and the failure is the mission's own
            return False
        self._last_error = _kind(exc)
        self._transition(self._breaker.failed(user, trio.current_time(), unsendable=unsendable(exc)), exc)
        return self._breaker.state != CLOSED

    def parked(self) -> None:
        """A claim was handed back because the circuit is open."""
        self._parked += 1
        self._metrics.llm_circuit_parked.inc()

    def snapshot(self) -> CircuitState:
        breaker = self._breaker
        next_probe = None
        if breaker.state == OPEN:
            next_probe = round(max(0.0, breaker.probe_at - trio.current_time()), 3)
        return CircuitState(breaker.state, breaker.streak, self._opened_at, next_probe, self._last_error)

    # -- the probe task --------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """While the circuit is open: one probe at a time on a capped back-off. Ends on ``close``."""
        with trio.CancelScope() as self._scope:
            task_status.started()
            if self._closing:
                return
            while True:
                changed = self._changed
                if self._breaker.state != OPEN:
                    await changed.wait()
                    continue
                with trio.move_on_at(self._breaker.probe_at):
                    await changed.wait()  # closed meanwhile by a call that was already running
                    continue
                self._transition(self._breaker.probe_started(), None)
                outcome = await self._probe()
                if isinstance(outcome, LlmClosed):
                    return  # shutting down
                if outcome is None or not is_outage(outcome):
                    self._transition(self._breaker.succeeded(), None)
                else:
                    self._last_error = _kind(outcome)
                    self._transition(self._breaker.probe_failed(trio.current_time()), outcome)

    def close(self) -> None:
        """Shutdown: end the probe task (a probe in flight is cancelled)."""
        self._closing = True
        if self._scope is not None:
            self._scope.cancel()

    def _transition(self, new: State | None, exc: BaseException | None) -> None:
        if new is None:
            return
        breaker = self._breaker
        self._metrics.llm_circuit_open.set(0 if new == CLOSED else 1)
        if new == OPEN and self._opened_at is None:
            self._opened_at = self._wall()
            self._parked = 0
            self._metrics.llm_circuit_opened.inc()
            log.warning("llm.circuit_opened", extra={
                "failures_in_a_row": breaker.streak, "users": len(breaker.users), "error": self._last_error,
                "probe_in_s": round(breaker.probe_delay_s, 3),
                "then": "missions are parked (no attempt used) until a probe is answered"})
        elif new == OPEN:
            log.info("llm.circuit_probe_failed", extra={"error": self._last_error,
                                                        "probe_in_s": round(breaker.probe_delay_s, 3)})
        elif new == PROBING:
            log.info("llm.circuit_probing", extra={})
        else:
            opened_at, self._opened_at = self._opened_at, None
            log.info("llm.circuit_closed", extra={
                "open_s": None if opened_at is None else round(self._wall() - opened_at, 3),
                "parked": self._parked})
            self.on_closed()
        self._changed.set()
        self._changed = trio.Event()


def _kind(exc: BaseException) -> str:
    """What /health may show: the status or the error's type, never a response body."""
    return f"mana-llm {exc.status}" if isinstance(exc, LlmHttpError) else type(exc).__name__
