"""The deployment's daily token cap as one process sees it: paused or not, told by reservations.

Every reservation made with `MANA_AI_MAX_TOKENS_PER_DAY` set reads the deployment's rolling
24 h use under the cap's lock (store/usage.py); this object keeps what the last one saw. The
first refusal pauses planning with one warning line, the first grant after it resumes it with
one info line; `/health` and the `mana_ai_global_budget_exhausted` gauge show the state.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import trio

from observability.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GlobalSpend:
    """What `/health` shows under `tokenBudget` (only with a cap set)."""

    cap: int | None        # MANA_AI_MAX_TOKENS_PER_DAY; None: no cap
    used_24h: int | None   # the deployment's use as last read; None: not read yet
    paused: bool           # the last reservation was refused by the cap
    paused_since: float | None  # time.time() of the refusal that paused planning

    def as_json(self) -> dict[str, object]:
        return {"maxTokensPerDay": self.cap, "used24h": self.used_24h, "paused": self.paused}


class GlobalBudget:
    def __init__(self, cap: int | None, metrics: Metrics) -> None:
        self._cap = cap
        self._metrics = metrics
        self._used: int | None = None
        self._paused_since: float | None = None
        # Held around a capped reservation and its `refused`/`granted`: the cap's advisory lock
        # orders them in the database anyway, and told in that same order the state kept here is
        # the newest (told out of order, a refusal could be undone by an earlier grant).
        self.in_order = trio.Lock()

    @property
    def cap(self) -> int | None:
        return self._cap

    def state(self) -> GlobalSpend:
        return GlobalSpend(self._cap, self._used, self._paused_since is not None, self._paused_since)

    def refused(self, used_24h: int) -> None:
        """A reservation found the deployment at or over its cap."""
        self._seen(used_24h)
        if self._paused_since is None:
            self._paused_since = time.time()
            self._metrics.global_budget_exhausted.set(1)
            log.warning("budget.global_exhausted", extra={
                "used_24h": used_24h, "cap": self._cap,
                "detail": "planning is paused until the rolling 24 h use drops below MANA_AI_MAX_TOKENS_PER_DAY"})

    def granted(self, used_24h: int) -> None:
        """A reservation found the deployment below its cap."""
        self._seen(used_24h)
        if self._paused_since is not None:
            paused_s = round(time.time() - self._paused_since, 1)
            self._paused_since = None
            self._metrics.global_budget_exhausted.set(0)
            log.info("budget.global_resumed", extra={"used_24h": used_24h, "cap": self._cap, "paused_s": paused_s})

    def _seen(self, used_24h: int) -> None:
        self._used = used_24h
        self._metrics.global_tokens_24h.set(used_24h)
