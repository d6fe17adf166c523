"""A parsed plan as the server iteration the TypeScript service writes back.

Key order matches the TypeScript service's object literals, so ``json.dumps`` of the result is
byte-identical to its ``JSON.stringify``. ``rationale`` is dropped: a PlanStep has no field
for it (the TypeScript service drops it too).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal, TypedDict

from planner.parse import JsonParams, Plan

__all__ = ["ServerIteration", "ServerPlanStep", "ToolCallIntent", "iso_ms", "plan_to_iteration"]


class ToolCallIntent(TypedDict):
    kind: Literal["toolCall"]
    toolName: str
    params: JsonParams


class ServerPlanStep(TypedDict):
    id: str
    summary: str
    intent: ToolCallIntent
    status: Literal["planned"]


class ServerIteration(TypedDict):
    id: str
    startedAt: str
    finishedAt: str
    plan: list[ServerPlanStep]
    summary: str
    overallStatus: Literal["awaiting-review", "approved"]
    source: Literal["server"]


def plan_to_iteration(plan: Plan, iteration_id: str, now_iso: str) -> ServerIteration:
    """Steps get ids ``<iteration_id>-<index>``; an empty plan is already ``approved``."""
    steps: list[ServerPlanStep] = [
        {
            "id": f"{iteration_id}-{index}",
            "summary": step.summary,
            "intent": {"kind": "toolCall", "toolName": step.tool_name, "params": step.params},
            "status": "planned",
        }
        for index, step in enumerate(plan.steps)
    ]
    return {
        "id": iteration_id,
        "startedAt": now_iso,
        "finishedAt": now_iso,
        "plan": steps,
        "summary": plan.summary,
        "overallStatus": "awaiting-review" if steps else "approved",
        "source": "server",
    }


def iso_ms(dt: datetime) -> str:
    """JavaScript's ``toISOString()``: UTC, milliseconds truncated, ``Z``.

    Naive datetimes are rejected (``ValueError``): their zone is a guess, and a wrong guess
    shifts every timestamp the webapp compares as a string. An instant outside the years
    1-9999 in UTC raises ``OverflowError`` (JS would print an expanded ``+010000`` year).
    """
    if dt.utcoffset() is None:
        raise ValueError("iso_ms needs an aware datetime, got a naive one")
    u = dt.astimezone(timezone.utc)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T"
        f"{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{u.microsecond // 1000:03d}Z"
    )
