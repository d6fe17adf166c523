"""Validation of the model's tool calls: pure, never raises.

The TypeScript service's tool-calling planner records every call as a step, hallucinated or denied
names and missing parameters included. Here a call becomes a step only when its tool is offered
(known and not denied by the agent's policy), its ``arguments`` are a JSON object, every
required parameter is present, every given catalog parameter has its JSON type (no coercion:
``"3"`` is not a number, ``3`` is not a string, ``null`` is neither) and an enum value is one of
the listed ones, and the step cap is not reached. Otherwise the verdict is a ``Rejected`` whose
message names the tool and the offending parameter, for the model to correct in the next round.
Parameters the catalog does not list are kept as sent (the TypeScript service keeps them too).

Ours besides: a value the store cannot hold or the refresh would reject once written
(``planner.storable``: NUL, lone surrogates, too long, too deep, a number no double holds) is
``unstorable-value``, and a call that would make the plan larger than MANA_AI_MAX_ROW_BYTES is
``plan-too-large``; both say what to change, never the value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from planner.storable import BAD_UNICODE, NUMBER_OUT_OF_RANGE, PARAMS_DEPTH, TOO_DEEP, Rejected as Unstorable
from planner.storable import RowBounds, stored_size
from planner.tools import AI_AVAILABLE_TOOL_NAMES, Tool, ToolParam

__all__ = ["Accepted", "RejectReason", "Rejected", "validate_tool_call"]

RejectReason = Literal["unknown-tool", "denied-tool", "malformed-arguments", "missing-parameter",
                       "wrong-type", "bad-enum", "step-limit", "unstorable-value", "plan-too-large"]


@dataclass(frozen=True, slots=True)
class Accepted:
    params: dict[str, object]
    stored_bytes: int = field(default=0, compare=False)  # the step's size in the plan (storage_problem's measure)


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: RejectReason
    message: str  # goes back to the model; names the tool and parameter, never echoes values


def validate_tool_call(name: str, arguments: str, offered: Mapping[str, Tool], *, steps_recorded: int,
                       max_steps: int, bounds: RowBounds = RowBounds(), plan_bytes: int = 0) -> Accepted | Rejected:
    """The verdict on one call; ``offered`` maps the agent-filtered tool names to the tools.

    ``plan_bytes`` is what the steps recorded so far take in the plan (their ``stored_bytes``).
    """
    tool = offered.get(name)
    if tool is None:
        if name in AI_AVAILABLE_TOOL_NAMES:
            return Rejected("denied-tool", f'Tool "{name}" is not allowed for this agent; do not call it.')
        return Rejected("unknown-tool", f'Tool "{name}" does not exist; use only the offered tools.')
    params = _parse_arguments(arguments)
    if params is None:
        return Rejected("malformed-arguments",
                        f'Tool "{name}": arguments are not a JSON object; send the parameters as one object.')
    for param in tool.params:
        if param.name not in params:
            if param.required:
                return Rejected("missing-parameter",
                                f'Tool "{name}": required parameter "{param.name}" is missing.')
            continue
        problem = _check_value(tool, param, params[param.name])
        if problem is not None:
            return problem
    if steps_recorded >= max_steps:
        return Rejected("step-limit", f'Tool "{name}": the plan already has {max_steps} steps, the limit; '
                                      "no further call is recorded. Finish with a short summary.")
    size = _stored_size(tool, params, bounds)
    if isinstance(size, Rejected):
        return size
    if plan_bytes + size > bounds.max_row_bytes:
        return Rejected("plan-too-large", f'Tool "{name}": with this call the plan would take {plan_bytes + size} '
                                          f"bytes, more than the {bounds.max_row_bytes} it may have; record "
                                          "smaller steps or finish with a short summary.")
    return Accepted(params, size)


def _stored_size(tool: Tool, params: dict[str, object], bounds: RowBounds) -> int | Rejected:
    """The step's size as stored (summary and tool name are the tool's name), or why a
    parameter cannot be stored; the message names catalog parameters only (others may be anything)."""
    known = {p.name for p in tool.params}
    total = 2 * (len(tool.name) + 2) + 2 + 2 * len(params) + max(0, 2 * (len(params) - 1))  # ASCII names
    for key, value in params.items():
        for part, depth in ((key, PARAMS_DEPTH + 1), (value, PARAMS_DEPTH + 1)):
            size = stored_size(part, bounds, depth=depth)
            if isinstance(size, Unstorable):
                what = f'parameter "{key}"' if key in known else "a parameter"
                return Rejected("unstorable-value", f'Tool "{tool.name}": {what} cannot be stored: '
                                                    f"{_advice(size, bounds)}.")
            total += size
    return total


def _advice(problem: Unstorable, bounds: RowBounds) -> str:
    if problem.reason == BAD_UNICODE:
        return "it holds a NUL character or an unpaired surrogate; send the text without it"
    if problem.reason == TOO_DEEP:
        return (f"it is nested too deeply (at most {bounds.max_json_depth - PARAMS_DEPTH - 1} levels); "
                "send a flatter value")
    if problem.reason == NUMBER_OUT_OF_RANGE:
        return "it holds a number too large for a double; send a smaller number"
    return f"it holds a text longer than {bounds.max_string_bytes} bytes; send a shorter one"


def _parse_arguments(arguments: str) -> dict[str, object] | None:
    if arguments.strip() == "":
        return None
    try:
        value = json.loads(arguments, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _check_value(tool: Tool, param: ToolParam, value: object) -> Rejected | None:
    if not _has_type(value, param.type):
        return Rejected("wrong-type", f'Tool "{tool.name}": parameter "{param.name}" must be a JSON '
                                      f"{param.type}, got {_json_type(value)}.")
    if param.enum and value not in param.enum:
        allowed = ", ".join(param.enum)
        return Rejected("bad-enum", f'Tool "{tool.name}": parameter "{param.name}" must be one of: {allowed}.')
    return None


def _has_type(value: object, json_type: str) -> bool:
    match json_type:
        case "string":
            return isinstance(value, str)
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        case "integer":  # JSON Schema: 2.0 is an integer too
            return (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, float) and value.is_integer())
        case "boolean":
            return isinstance(value, bool)
        case "array":
            return isinstance(value, list)
        case "object":
            return isinstance(value, dict)
    return False


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"
