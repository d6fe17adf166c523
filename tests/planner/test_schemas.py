"""The agent-filtered tools as OpenAI function schemas."""

from __future__ import annotations

import json

import pytest

from planner import AI_AVAILABLE_TOOLS, Tool, ToolParam, filter_tools_by_agent_policy
from planner.schemas import tool_to_function_schema, tools_to_function_schemas

BY_NAME = {t.name: t for t in AI_AVAILABLE_TOOLS}


def test_a_tool_becomes_a_function_with_typed_properties_enum_and_required() -> None:
    assert tool_to_function_schema(BY_NAME["create_task"]) == {
        "type": "function",
        "function": {
            "name": "create_task",
            "description": "Erstellt einen neuen Task mit optionalem Faelligkeitsdatum und Prioritaet",
            "parameters": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "description": "Titel des Tasks"},
                    "dueDate": {"type": "string", "description": "Faelligkeitsdatum (YYYY-MM-DD)"},
                    "priority": {"type": "string", "description": "Prioritaet", "enum": ["low", "medium", "high"]},
                    "description": {"type": "string", "description": "Beschreibung"},
                },
                "required": ["title"],
            },
        },
    }


def test_numbers_stay_numbers_and_a_tool_without_params_has_an_empty_object() -> None:
    research = tool_to_function_schema(BY_NAME["research_news"])["function"]["parameters"]
    assert research["properties"]["limit"]["type"] == "number" and research["required"] == ["query"]
    assert tool_to_function_schema(BY_NAME["undo_drink"])["function"]["parameters"] == {
        "type": "object", "properties": {}, "required": []}


def test_every_catalog_tool_renders_as_json() -> None:
    schemas = tools_to_function_schemas(AI_AVAILABLE_TOOLS)
    assert [s["function"]["name"] for s in schemas] == [t.name for t in AI_AVAILABLE_TOOLS]
    json.dumps(schemas)  # plain JSON, nothing else


def test_denied_tools_are_not_offered() -> None:
    tools = filter_tools_by_agent_policy(AI_AVAILABLE_TOOLS, {"tools": {"create_task": "deny"},
                                                              "defaultsByModule": {"notes": "deny"}})
    names = {s["function"]["name"] for s in tools_to_function_schemas(tools)}
    assert "create_task" not in names and "create_note" not in names and "complete_task" in names


def test_an_empty_enum_is_left_out_and_an_unknown_type_is_a_catalog_bug() -> None:
    tool = Tool("t", "m", "d", (ToolParam("a", "string", "A", enum=()),))
    assert "enum" not in tool_to_function_schema(tool)["function"]["parameters"]["properties"]["a"]
    with pytest.raises(ValueError, match=r"t\.a"):
        tool_to_function_schema(Tool("t", "m", "d", (ToolParam("a", "date", "A"),)))
