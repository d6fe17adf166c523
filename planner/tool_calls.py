"""Validation of the model's tool calls (DESIGN §4: "calls are validated"): pure, never raises.

The reference's tool-calling planner records every call as a step, hallucinated or denied
names and missing parameters included. Here a call becomes a step only when its tool is offered
(known and not denied by the agent's policy), its ``arguments`` are a JSON object, every
required parameter is present, every given catalog parameter has its JSON type (no coercion:
``"3"`` is not a number, ``3`` is not a string, ``null`` is neither) and an enum value is one of
the listed ones, and the step cap is not reached. Otherwise the verdict is a ``Rejected`` whose
message names the tool and the offending parameter, for the model to correct in the next round.
Parameters the catalog does not list are kept as sent (the reference keeps them too).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from planner.tools import AI_AVAILABLE_TOOL_NAMES, Tool, ToolParam

__all__ = ["Accepted", "RejectReason", "Rejected", "validate_tool_call"]

RejectReason = Literal["unknown-tool", "denied-tool", "malformed-arguments", "missing-parameter",
                       "wrong-type", "bad-enum", "step-limit"]


@dataclass(frozen=True, slots=True)
class Accepted:
    params: dict[str, object]


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: RejectReason
    message: str  # goes back to the model; names the tool and parameter, never echoes values


def validate_tool_call(name: str, arguments: str, offered: Mapping[str, Tool], *, steps_recorded: int,
                       max_steps: int) -> Accepted | Rejected:
    """The verdict on one call; ``offered`` maps the agent-filtered tool names to the tools."""
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
    return Accepted(params)


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
