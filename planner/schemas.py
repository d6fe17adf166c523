"""The agent-filtered propose tools as OpenAI function schemas, as the TypeScript service renders them.

``tools_to_function_schemas`` renders each catalog tool as ``{"type": "function", "function":
{name, description, parameters}}``; ``parameters`` is a JSON Schema object with one typed
property per parameter, its ``enum`` when the catalog has a non-empty one, and ``required``.
Pure: the validator (planner/tool_calls.py) checks calls against the same catalog entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NotRequired, TypedDict

from planner.tools import Tool, ToolParam

__all__ = ["JSON_TYPES", "FunctionSchema", "ParameterSchema", "tool_to_function_schema",
           "tools_to_function_schemas"]

#: the JSON Schema types a catalog parameter may have (the TypeScript service throws on any other)
JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object"})


class PropertySchema(TypedDict):
    type: str
    description: str
    enum: NotRequired[list[str]]


class ParameterSchema(TypedDict):
    type: Literal["object"]
    properties: dict[str, PropertySchema]
    required: list[str]


class FunctionDefinition(TypedDict):
    name: str
    description: str
    parameters: ParameterSchema


class FunctionSchema(TypedDict):
    type: Literal["function"]
    function: FunctionDefinition


def tools_to_function_schemas(tools: Sequence[Tool]) -> list[FunctionSchema]:
    """One schema per tool, in the given (catalog) order; pass the agent-filtered tools."""
    return [tool_to_function_schema(t) for t in tools]


def tool_to_function_schema(tool: Tool) -> FunctionSchema:
    """Raises ``ValueError`` for a parameter type JSON Schema does not know (a catalog bug)."""
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": {
                "type": "object",
                "properties": {p.name: _property(tool, p) for p in tool.params},
                "required": [p.name for p in tool.params if p.required],
            },
        },
    }


def _property(tool: Tool, param: ToolParam) -> PropertySchema:
    if param.type not in JSON_TYPES:
        raise ValueError(f"{tool.name}.{param.name}: unknown parameter type {param.type!r}")
    schema: PropertySchema = {"type": param.type, "description": param.description}
    if param.enum:  # kept only when non-empty, as the TypeScript service does
        schema["enum"] = list(param.enum)
    return schema
