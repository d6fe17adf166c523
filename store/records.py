"""Typed views of snapshot records, coerced as the TypeScript service does (pure).

`sync_changes.data` is whatever a device sent. The fold stores it verbatim; these views
coerce on read (the TypeScript service's `ServerMission` and `toServerAgent`) and `*_field_problems`
names what had to be coerced, so the refresh can log and count it once.

`from_record` is total: it never raises, whatever the record holds. The refresh's bounds
(store/bounds.py) keep new records within what a double and the decoder hold, but snapshots
stored before them may not be, and one agent that cannot be read must not fail a cycle after
its missions were claimed. Numbers no double holds read as ±Infinity (JavaScript's `Number`);
a `maxTokensPerDay` that is not a finite number below 2^63 (a Postgres bigint) reads as no
budget, as a negative one does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planner._js import js_number, js_string
from store.instants import instant_of

_MAX_BUDGET = float(2**63)  # budgets are bigint parameters in store/usage.py


def _js_string(value: Any) -> str:
    """`String(x ?? '')`, the TypeScript service's coercion of text fields."""
    return "" if value is None else _string(value)


def _string(value: Any) -> str:
    """`String(x)`, total: a value too deep or too long to render (older snapshots) reads as ''."""
    try:
        return js_string(value)
    except (RecursionError, ValueError):  # nesting past the stack; an int past 4,300 digits
        return ""


@dataclass(frozen=True)
class Mission:
    id: str
    user_id: str
    title: str
    objective: str
    concept_markdown: str
    state: str
    next_run_at: str | None
    inputs: tuple[Any, ...]
    cadence: Any
    iterations: tuple[Any, ...]
    grant: Any
    agent_id: str | None

    @classmethod
    def from_record(cls, user_id: str, record: Mapping[str, Any]) -> Mission:
        inputs = record.get("inputs")
        iterations = record.get("iterations")
        next_run = record.get("nextRunAt")
        agent_id = record.get("agentId")
        return cls(
            id=_string(record.get("id", "")),  # String(record.id): a null id reads "null"
            user_id=user_id,
            title=_js_string(record.get("title")),
            objective=_js_string(record.get("objective")),
            concept_markdown=_js_string(record.get("conceptMarkdown")),
            state=_js_string(record.get("state")),
            next_run_at=next_run if isinstance(next_run, str) and next_run else None,
            inputs=tuple(inputs) if isinstance(inputs, list) else (),
            cadence=record.get("cadence"),
            iterations=tuple(iterations) if isinstance(iterations, list) else (),
            grant=record.get("grant"),
            agent_id=agent_id if isinstance(agent_id, str) else None,
        )


def mission_field_problems(record: Mapping[str, Any]) -> list[str]:
    """Fields of a mission record whose type the TypeScript service would have to coerce."""
    problems = []
    for key in ("inputs", "iterations"):
        if key in record and not isinstance(record[key], list):
            problems.append(f"{key} is not a list")
    for key in ("nextRunAt", "agentId"):
        if record.get(key) is not None and not isinstance(record[key], str):
            problems.append(f"{key} is not a string")
    for key in ("title", "objective", "conceptMarkdown", "state"):
        if record.get(key) is not None and not isinstance(record[key], str):
            problems.append(f"{key} is not a string")
    next_run = record.get("nextRunAt")
    if isinstance(next_run, str) and next_run and instant_of(next_run) is None:
        problems.append("nextRunAt names no ISO-8601 instant (never due)")
    if record.get("grant") is not None and not isinstance(record["grant"], Mapping):
        problems.append("grant is not an object")
    return problems


@dataclass(frozen=True)
class Agent:
    id: str
    user_id: str
    name: str
    role: str
    avatar: str | None
    system_prompt: str | None
    memory: str | None
    policy: Mapping[str, Any] | None
    state: str
    max_concurrent_missions: float  # NaN when not numeric: the TypeScript service's Number(x)
    max_tokens_per_day: float | None
    deleted_at: str | None

    @classmethod
    def from_record(cls, user_id: str, record: Mapping[str, Any]) -> Agent:
        policy = record.get("policy")
        budget = record.get("maxTokensPerDay")
        state = record.get("state")
        return cls(
            id=_string(record.get("id", "")),
            user_id=user_id,
            name=_js_string(record["name"]) if record.get("name") is not None else "Unnamed",
            role=_js_string(record.get("role")),
            avatar=_str_or_none(record.get("avatar")),
            system_prompt=_str_or_none(record.get("systemPrompt")),
            memory=_str_or_none(record.get("memory")),
            policy=policy if isinstance(policy, Mapping) else None,
            state=_js_string(state) if state is not None else "active",
            max_concurrent_missions=_js_number(record.get("maxConcurrentMissions", 1)),
            max_tokens_per_day=_budget(budget),
            deleted_at=_str_or_none(record.get("deletedAt")),
        )


def agent_field_problems(record: Mapping[str, Any]) -> list[str]:
    problems = []
    if record.get("policy") is not None and not isinstance(record["policy"], Mapping):
        problems.append("policy is not an object")
    limit = record.get("maxConcurrentMissions")
    if limit is not None and not _is_number(limit):
        problems.append("maxConcurrentMissions is not a number")
    if limit is not None and _is_number(limit) and not math.isfinite(_js_number(limit)):
        problems.append("maxConcurrentMissions is out of range")
    budget = record.get("maxTokensPerDay")
    if budget is not None and not _is_number(budget):
        problems.append("maxTokensPerDay is not a number")
    elif _is_number(budget) and _budget(budget) is None:
        problems.append("maxTokensPerDay is out of range")
    for key in ("name", "state", "role"):
        if record.get(key) is not None and not isinstance(record[key], str):
            problems.append(f"{key} is not a string")
    return problems


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _js_number(value: Any) -> float:
    """JavaScript `Number(x ?? 1)` for JSON values; an integer past a double is ±Infinity."""
    if value is None:
        return 1.0
    if isinstance(value, int) and not isinstance(value, bool):
        return _int_to_float(value)
    try:
        return js_number(value)
    except (OverflowError, RecursionError, ValueError):  # arrays holding such values (older snapshots)
        return math.nan


def _int_to_float(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _budget(value: Any) -> float | None:
    """`maxTokensPerDay` as a number of tokens; None (no budget) unless a finite number < 2^63."""
    if not _is_number(value):
        return None
    budget = _int_to_float(value) if isinstance(value, int) else float(value)
    return budget if math.isfinite(budget) and budget < _MAX_BUDGET else None
