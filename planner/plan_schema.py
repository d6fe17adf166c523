"""The JSON schema of a mission's plan, for servers that constrain their output to one (pure).

With ``MANA_AI_LLM_RESPONSE_FORMAT`` set, the ``json`` planner's request carries a
``response_format`` built here from the agent's allowed tools, so that a server decoding under
the schema (llama.cpp's grammars, vLLM's guided decoding, Ollama's ``format``, OpenAI's
structured outputs) can only write a plan the strict parser (``planner.parse``) accepts:

* an object with ``summary`` (a string) and ``steps``, nothing else;
* 1 to ``MAX_STEPS`` steps, as the prompt asks (none when the agent has no tool);
* each step an object naming one allowed tool (its name as a one-value ``enum``), with that
  tool's ``params`` (each catalog parameter typed, its ``enum`` if it has one, the required
  ones required, no others), a ``summary`` and a non-empty ``rationale``, nothing else;
* the plan's summary and a step's rationale at most 300 characters, a step's summary 150, and
  never longer than ``MANA_AI_MAX_STRING_BYTES`` allows (a character takes up to 4 UTF-8
  bytes). The bounds stay small: llama.cpp turns each character of a bound into a nested
  grammar rule, per tool (17 tools: about 8,000 rules at these bounds).

What no keyword every server takes can say is left to the parser, which still checks every
answer (a server may also ignore the format): a NUL or a lone surrogate written as a ``\\u``
escape, a number beyond a double, parameter strings longer than ``MANA_AI_MAX_STRING_BYTES``
(a length bound that large makes llama.cpp's grammar huge), a plan past
``MANA_AI_MAX_ROW_BYTES``. Optional parameters are optional here; OpenAI's own API in strict
mode wants every property required (docs/configuration.md says which value fits which server).

Deterministic: the same tools and bounds give the same schema, key for key, so a server can
cache its grammar; it is built once per tool set and bounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from planner.schemas import JSON_TYPES
from planner.storable import RowBounds
from planner.tools import Tool, ToolParam

__all__ = ["MAX_STEPS", "RESPONSE_FORMATS", "SCHEMA_NAME", "plan_schema", "response_format"]

#: The values of MANA_AI_LLM_RESPONSE_FORMAT.
RESPONSE_FORMATS = ("none", "json_object", "json_schema", "json_object_schema")

#: ``json_schema.name`` of the ``json_schema`` dialect.
SCHEMA_NAME = "mission_plan"

#: Steps of one plan: the prompt's "1 bis 10 Schritte".
MAX_STEPS = 10

_PLAN_SUMMARY_CHARS = 300
_STEP_SUMMARY_CHARS = 150
_RATIONALE_CHARS = 300
_UTF8_MAX_BYTES = 4  # per character

JsonSchema = dict[str, Any]


def response_format(kind: str, tools: Sequence[Tool], bounds: RowBounds = RowBounds()) -> Mapping[str, object] | None:
    """The request's ``response_format`` for a MANA_AI_LLM_RESPONSE_FORMAT value; None for
    ``none`` (the request carries none). Raises ``ValueError`` for any other value.

    The value is shared between calls: read it, never change it.
    """
    if kind not in RESPONSE_FORMATS:
        raise ValueError(f"unknown response format {kind!r}")
    return None if kind == "none" else _response_format(kind, tuple(tools), bounds)


def plan_schema(tools: Sequence[Tool], bounds: RowBounds = RowBounds()) -> JsonSchema:
    """The plan's JSON schema for an agent allowed ``tools`` (pass them in catalog order, as the
    policy filter gives them). Raises ``ValueError`` for a parameter type JSON Schema does not
    know (a catalog bug)."""
    limit = bounds.max_string_bytes // _UTF8_MAX_BYTES
    steps: JsonSchema = {"type": "array", "items": _step_schema(tools, limit)}
    steps.update({"minItems": 1, "maxItems": MAX_STEPS} if tools else {"maxItems": 0})
    return {
        "type": "object",
        "properties": {"summary": {"type": "string", "maxLength": min(_PLAN_SUMMARY_CHARS, limit)},
                       "steps": steps},
        "required": ["summary", "steps"],
        "additionalProperties": False,
    }


@lru_cache(maxsize=64)
def _response_format(kind: str, tools: tuple[Tool, ...], bounds: RowBounds) -> Mapping[str, object]:
    if kind == "json_object":
        return {"type": "json_object"}
    schema = plan_schema(tools, bounds)
    if kind == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": schema}}
    return {"type": "json_object", "schema": schema}  # json_object_schema: llama-cpp-python's server


def _step_schema(tools: Sequence[Tool], limit: int) -> JsonSchema:
    if not tools:  # no step can be written; the items schema is never used
        return {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
    return {"anyOf": [_tool_step(tool, limit) for tool in tools]}


def _tool_step(tool: Tool, limit: int) -> JsonSchema:
    return {
        "type": "object",
        "properties": {
            "toolName": {"type": "string", "enum": [tool.name]},
            "summary": {"type": "string", "maxLength": min(_STEP_SUMMARY_CHARS, limit)},
            "params": {
                "type": "object",
                "properties": {p.name: _param(tool, p) for p in tool.params},
                "required": [p.name for p in tool.params if p.required],
                "additionalProperties": False,
            },
            "rationale": {"type": "string", "minLength": 1, "maxLength": min(_RATIONALE_CHARS, limit)},
        },
        "required": ["toolName", "summary", "params", "rationale"],
        "additionalProperties": False,
    }


def _param(tool: Tool, param: ToolParam) -> JsonSchema:
    if param.type not in JSON_TYPES:
        raise ValueError(f"{tool.name}.{param.name}: unknown parameter type {param.type!r}")
    schema: JsonSchema = {"type": param.type}
    if param.enum:
        schema["enum"] = list(param.enum)
    return schema
