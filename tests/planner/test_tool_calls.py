"""Validation of tool calls: what is recorded, and what the model is told when it is not."""

from __future__ import annotations

import json

import pytest

from planner import AI_AVAILABLE_TOOLS, Tool, ToolParam
from planner.tool_calls import Accepted, Rejected, validate_tool_call

OFFERED = {t.name: t for t in AI_AVAILABLE_TOOLS if t.name != "update_note"}  # update_note denied


def check(name: str, arguments: object, *, steps: int = 0, max_steps: int = 25) -> Accepted | Rejected:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return validate_tool_call(name, raw, OFFERED, steps_recorded=steps, max_steps=max_steps)


def rejected(verdict: Accepted | Rejected) -> Rejected:
    assert isinstance(verdict, Rejected), verdict
    return verdict


def test_a_valid_call_is_accepted_with_its_params_including_extra_ones() -> None:
    assert check("create_task", {"title": "Foo", "priority": "high", "x": 1}) == Accepted(
        {"title": "Foo", "priority": "high", "x": 1})
    assert check("undo_drink", {}) == Accepted({})
    assert check("research_news", {"query": "q", "limit": 5}) == Accepted({"query": "q", "limit": 5})


def test_unknown_and_denied_tools_are_named() -> None:
    unknown = rejected(check("delete_everything", {}))
    assert unknown.reason == "unknown-tool" and '"delete_everything"' in unknown.message
    denied = rejected(check("update_note", {"noteId": "n1"}))
    assert denied.reason == "denied-tool" and '"update_note"' in denied.message


def test_a_missing_required_parameter_is_named() -> None:
    verdict = rejected(check("create_event", {"title": "x"}))
    assert verdict.reason == "missing-parameter"
    assert '"create_event"' in verdict.message and '"startIso"' in verdict.message


@pytest.mark.parametrize(("name", "arguments", "param", "expected"), [
    ("create_task", {"title": 42}, "title", "string"),
    ("create_task", {"title": None}, "title", "string"),
    ("research_news", {"query": "q", "limit": "5"}, "limit", "number"),
    ("research_news", {"query": "q", "limit": True}, "limit", "number"),
    ("create_contact", {"firstName": ["A"]}, "firstName", "string"),
])
def test_a_wrong_json_type_is_not_coerced(name: str, arguments: object, param: str, expected: str) -> None:
    verdict = rejected(check(name, arguments))
    assert verdict.reason == "wrong-type"
    assert f'"{name}"' in verdict.message and f'"{param}"' in verdict.message and expected in verdict.message


def test_an_enum_value_must_be_listed() -> None:
    verdict = rejected(check("create_journal_entry", {"content": "x", "mood": "ecstatic"}))
    assert verdict.reason == "bad-enum" and '"mood"' in verdict.message and "great" in verdict.message
    assert isinstance(check("create_journal_entry", {"content": "x", "mood": "good"}), Accepted)


@pytest.mark.parametrize("arguments", ["{not json", "", "[1, 2]", '"text"', "null", '{"title": NaN}'])
def test_malformed_arguments_are_a_rejected_call(arguments: str) -> None:
    verdict = rejected(check("create_task", arguments))
    assert verdict.reason == "malformed-arguments" and '"create_task"' in verdict.message


def test_the_step_cap_rejects_further_calls() -> None:
    assert isinstance(check("create_task", {"title": "a"}, steps=24, max_steps=25), Accepted)
    verdict = rejected(check("create_task", {"title": "a"}, steps=25, max_steps=25))
    assert verdict.reason == "step-limit" and "25" in verdict.message


def test_other_json_types() -> None:
    tool = Tool("t", "m", "d", (ToolParam("i", "integer", ""), ToolParam("b", "boolean", ""),
                                ToolParam("a", "array", ""), ToolParam("o", "object", "")))
    offered = {"t": tool}
    ok = validate_tool_call("t", json.dumps({"i": 2, "b": False, "a": [], "o": {}}), offered,
                            steps_recorded=0, max_steps=1)
    assert isinstance(ok, Accepted)
    bads: list[dict[str, object]] = [{"i": 2.5}, {"b": 0}, {"a": {}}, {"o": []}]
    for bad in bads:
        assert isinstance(validate_tool_call("t", json.dumps(bad), offered, steps_recorded=0, max_steps=1),
                          Rejected)
