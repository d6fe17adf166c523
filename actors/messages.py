"""Messages and results passed between actors and the HTTP front (frozen where shared)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio


@dataclass
class TickStats:
    """The reference's `TickStats` (§12); `as_json` keeps its exact keys and order."""

    scanned_at: str
    due_mission_count: int = 0
    plans_produced: int = 0
    plans_written_back: int = 0
    parse_failures: int = 0
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "scannedAt": self.scanned_at,
            "dueMissionCount": self.due_mission_count,
            "plansProduced": self.plans_produced,
            "plansWrittenBack": self.plans_written_back,
            "parseFailures": self.parse_failures,
            "errors": list(self.errors),
        }


class Cycle:
    """One snapshot cycle; requesters wait on `wait()` and read `stats` afterwards."""

    def __init__(self, reason: str) -> None:
        self.reason = reason  # "interval" | "manual"
        self.stats: TickStats | None = None
        self._done = trio.Event()

    def finish(self, stats: TickStats) -> None:
        self.stats = stats
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> TickStats:
        await self._done.wait()
        assert self.stats is not None
        return self.stats
