"""planner/plan_schema.py: every plan a constrained decoder can write from the schema is one the
strict parser accepts, and the schema is the same bytes for the same mission.

Plans are drawn from the schema itself by a small schema walker (below) that knows only the
keywords the schema may use; a keyword it does not know fails the test, so the walker can
never silently skip a constraint the schema adds later.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.parse import Plan, parse_planner_response
from planner.plan_schema import (
    MAX_STEPS,
    RESPONSE_FORMATS,
    SCHEMA_NAME,
    plan_schema,
    response_format,
)
from planner.policy import allowed_tool_names
from planner.storable import RowBounds
from planner.tools import AI_AVAILABLE_TOOLS, Tool, ToolParam

ROOT = Path(__file__).resolve().parents[2]

#: What the walker understands; anything else in a schema is a test failure.
KNOWN_KEYWORDS = {"type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
                  "minLength", "maxLength", "enum", "anyOf"}

#: A decoder writes any character in a JSON string; NUL and lone surrogates are the ones the
#: schema cannot forbid (no JSON Schema keyword every server takes does), and the strict parser
#: refuses them (planner.storable, bad-unicode). The walker leaves them out.
TEXT = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    unknown = set(schema) - KNOWN_KEYWORDS
    assert not unknown, f"the walker does not know {unknown}: teach it, then test the parser with it"
    if "anyOf" in schema:
        assert set(schema) == {"anyOf"}
        return st.one_of([from_schema(branch) for branch in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema["type"]
    if kind == "object":
        assert schema["additionalProperties"] is False
        properties = schema["properties"]
        required = schema["required"]
        assert set(required) <= set(properties)
        return st.fixed_dictionaries({k: from_schema(properties[k]) for k in required},
                                     optional={k: from_schema(v) for k, v in properties.items() if k not in required})
    if kind == "array":
        return st.lists(from_schema(schema["items"]), min_size=schema.get("minItems", 0),
                        max_size=schema.get("maxItems", 4))
    if kind == "string":
        return st.text(TEXT, min_size=schema.get("minLength", 0), max_size=schema.get("maxLength", 40))
    if kind == "number":
        return st.integers(-10**15, 10**15) | st.floats(allow_nan=False, allow_infinity=False)
    if kind == "integer":
        return st.integers(-10**15, 10**15)
    if kind == "boolean":
        return st.booleans()
    raise AssertionError(f"unknown type {kind!r}")


TOOL_SETS = st.sets(st.sampled_from([t.name for t in AI_AVAILABLE_TOOLS])).map(
    lambda names: tuple(t for t in AI_AVAILABLE_TOOLS if t.name in names))  # catalog order, as the policy filter
BOUNDS = st.sampled_from([RowBounds(), RowBounds(max_json_depth=16, max_string_bytes=1024, max_row_bytes=65_536)])


@settings(max_examples=150, deadline=None)
@given(tools=TOOL_SETS, bounds=BOUNDS, data=st.data())
def test_every_plan_the_schema_allows_is_accepted_by_the_parser(tools: tuple[Tool, ...], bounds: RowBounds,
                                                                data: st.DataObject) -> None:
    schema = plan_schema(tools, bounds)
    value = data.draw(from_schema(schema), label="plan")
    text = json.dumps(value, ensure_ascii=data.draw(st.booleans(), label="ascii"),
                      indent=data.draw(st.sampled_from([None, 2]), label="indent"))
    parsed = parse_planner_response(text, allowed_tool_names(tools), bounds)
    assert isinstance(parsed, Plan), parsed
    assert parsed.summary == value["summary"]
    assert [(s.summary, s.tool_name, s.params, s.rationale) for s in parsed.steps] == [
        (s["summary"], s["toolName"], s["params"], s["rationale"]) for s in value["steps"]]


def test_each_step_names_one_allowed_tool_with_its_parameters() -> None:
    tools = tuple(t for t in AI_AVAILABLE_TOOLS if t.name in ("create_task", "undo_drink"))
    schema = plan_schema(tools)
    assert schema["required"] == ["summary", "steps"] and schema["additionalProperties"] is False
    steps = schema["properties"]["steps"]
    assert (steps["minItems"], steps["maxItems"]) == (1, MAX_STEPS)
    create_task, undo_drink = steps["items"]["anyOf"]
    assert create_task["properties"]["toolName"] == {"type": "string", "enum": ["create_task"]}
    assert create_task["required"] == ["toolName", "summary", "params", "rationale"]
    assert create_task["properties"]["rationale"]["minLength"] == 1
    assert create_task["properties"]["params"] == {
        "type": "object",
        "properties": {"title": {"type": "string"}, "dueDate": {"type": "string"},
                       "priority": {"type": "string", "enum": ["low", "medium", "high"]},
                       "description": {"type": "string"}},
        "required": ["title"], "additionalProperties": False}
    assert undo_drink["properties"]["params"] == {"type": "object", "properties": {}, "required": [],
                                                  "additionalProperties": False}


def test_an_agent_without_tools_may_only_send_no_steps() -> None:
    schema = plan_schema(())
    assert schema["properties"]["steps"]["maxItems"] == 0
    assert isinstance(parse_planner_response(json.dumps({"summary": "nichts", "steps": []}), set()), Plan)


def test_lengths_follow_the_string_bound() -> None:
    """maxLength counts characters; a character takes up to 4 UTF-8 bytes of the bound."""
    small = plan_schema(AI_AVAILABLE_TOOLS[:1], RowBounds(max_string_bytes=1024))
    step = small["properties"]["steps"]["items"]["anyOf"][0]["properties"]
    assert small["properties"]["summary"]["maxLength"] <= 256 and step["rationale"]["maxLength"] <= 256


def test_a_catalog_type_outside_json_schema_is_refused() -> None:
    odd = Tool("odd", "x", "d", (ToolParam("when", "date", "d", required=True),))
    with pytest.raises(ValueError, match="odd.when"):
        plan_schema((odd,))


def test_the_response_format_of_each_setting() -> None:
    tools = AI_AVAILABLE_TOOLS[:2]
    schema = plan_schema(tools)
    assert RESPONSE_FORMATS == ("none", "json_object", "json_schema", "json_object_schema")
    assert response_format("none", tools) is None
    assert response_format("json_object", tools) == {"type": "json_object"}
    assert response_format("json_schema", tools) == {
        "type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": schema}}
    assert response_format("json_object_schema", tools) == {"type": "json_object", "schema": schema}
    with pytest.raises(ValueError):
        response_format("yaml", tools)


_DUMP = ("import json, sys; from planner.plan_schema import response_format; "
         "from planner.tools import AI_AVAILABLE_TOOLS as T; "
         "sys.stdout.write(json.dumps(response_format('json_schema', T[3:9])))")


def test_the_schema_is_the_same_bytes_for_the_same_mission() -> None:
    """Same tools, same bytes: in one process and across processes with other hash seeds (no
    set or dict order of the moment may leak into it), so servers can cache its grammar."""
    tools = AI_AVAILABLE_TOOLS[3:9]
    here = json.dumps(response_format("json_schema", tools))
    assert here == json.dumps(response_format("json_schema", tuple(tools)))
    outputs = {subprocess.run([sys.executable, "-c", _DUMP], cwd=ROOT, check=True, capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert outputs == {here}
