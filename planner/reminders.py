"""Transient reminders for the tool-calling planner, as the TypeScript service sends them: pure.

A reminder is sent as an extra system message after the history, for one request only, and is
never stored in the history. Only the token-budget producer applies to the server: nothing is
compacted here, and the retry-loop producer needs executed calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["BUDGET_ESCALATE", "BUDGET_WARN", "Reminder", "budget_reminder"]

BUDGET_WARN = 0.75
BUDGET_ESCALATE = 1.0


@dataclass(frozen=True, slots=True)
class Reminder:
    producer: Literal["token-budget"]
    severity: Literal["warn", "escalate"]
    text: str

    def message(self) -> str:
        return f"<reminder>{self.text}</reminder>"


def budget_reminder(agent_name: str, used: int, cap: int) -> Reminder | None:
    """Warn at >= 75 % of the daily cap, escalate at >= 100 %; None without a positive cap."""
    if cap <= 0:
        return None
    pct = used / cap
    if pct < BUDGET_WARN:
        return None
    shown = f"{used}/{cap} Tokens ({round(pct * 100)} %)"
    if pct < BUDGET_ESCALATE:
        return Reminder("token-budget", "warn",
                        f"Agent {agent_name} hat {shown} seines Tagesbudgets verbraucht. Plane sparsam "
                        "und schließe bald mit einer Zusammenfassung ab.")
    return Reminder("token-budget", "escalate",
                    f"Agent {agent_name} hat sein Tagesbudget erreicht: {shown}. Schließe JETZT ohne "
                    "weitere Tool-Aufrufe mit einer Zusammenfassung ab.")
