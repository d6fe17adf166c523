"""Agent gating decisions (archived, paused) and concurrency limits, as the TypeScript service
makes them; pure."""

from __future__ import annotations

import math

from actors.messages import SKIPPED_ARCHIVED, SKIPPED_PAUSED
from store.records import Agent


def gate(agent: Agent | None) -> str | None:
    """The skip decision for an agent's next mission, in the TypeScript service's order, or None
    to run."""
    if agent is None:
        return None  # legacy missions are never gated
    if agent.state == "archived":
        return SKIPPED_ARCHIVED
    if agent.state == "paused":
        return SKIPPED_PAUSED
    return None


def concurrency_limit(agent: Agent | None, legacy_limit: int) -> int:
    """Missions of this agent that may run at once: missing → 1, 0 blocks all.

    A non-numeric or negative value counts as 1 (the refresh already logged it); a fraction
    rounds up, as the TypeScript service's `used >= limit` comparison allows.
    """
    if agent is None:
        return legacy_limit
    value = agent.max_concurrent_missions
    if math.isnan(value) or value < 0:
        return 1
    if math.isinf(value):
        return legacy_limit
    return math.ceil(value)
