"""Validation of tool calls: what is recorded, and what the model is told when it is not."""

from __future__ import annotations

import json

import pytest

from planner import AI_AVAILABLE_TOOLS, Tool, ToolParam
from planner.parse import Plan, PlanStep, storage_problem
from planner.storable import RowBounds
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


# --- what the store cannot hold (planner.storable) -------------------------------------------


@pytest.mark.parametrize(("arguments", "named", "advice"), [
    ({"title": "a\u0000b"}, 'parameter "title"', "NUL character or an unpaired surrogate"),
    ({"title": "\ud800"}, 'parameter "title"', "NUL character or an unpaired surrogate"),
    ({"title": "ok", "x\u0000": 1}, "a parameter", "NUL character or an unpaired surrogate"),
    ({"title": "ok", "secret-name-" + "k" * 70_000: 1}, "a parameter", "longer than 65536 bytes"),
    ({"title": "x" * 70_000}, 'parameter "title"', "longer than 65536 bytes"),
    ({"title": "ok", "deep": json.loads("[" * 58 + "]" * 58)}, "a parameter", "at most 57 levels"),
    ({"title": "ok", "n": int("9" * 400)}, "a parameter", "too large for a double"),
])
def test_a_value_the_store_cannot_hold_is_rejected_for_the_model_to_correct(
        arguments: dict[str, object], named: str, advice: str) -> None:
    verdict = rejected(check("create_task", arguments))
    assert verdict.reason == "unstorable-value" and '"create_task"' in verdict.message
    assert named in verdict.message and advice in verdict.message
    assert "\u0000" not in verdict.message and "secret-name" not in verdict.message and "xxxx" not in verdict.message


def test_nesting_right_up_to_the_bound_is_recorded() -> None:
    assert isinstance(check("create_task", {"title": "ok", "deep": json.loads("[" * 57 + "]" * 57)}), Accepted)


def test_a_call_that_would_make_the_plan_too_large_is_rejected() -> None:
    bounds = RowBounds(max_row_bytes=65_536)
    first = validate_tool_call("create_task", json.dumps({"title": "x" * 60_000}), OFFERED, steps_recorded=0,
                               max_steps=25, bounds=bounds)
    assert isinstance(first, Accepted)
    plan = Plan("", (PlanStep("create_task", "create_task", "", first.params),))
    assert first.stored_bytes == 60_000 + len('{"title": ""}') + 2 * len('"create_task"')
    verdict = rejected(validate_tool_call("create_task", json.dumps({"title": "y" * 6000}), OFFERED,
                                          steps_recorded=1, max_steps=25, bounds=bounds, plan_bytes=first.stored_bytes))
    assert verdict.reason == "plan-too-large" and "65536" in verdict.message
    assert storage_problem(plan, bounds) is None
    assert storage_problem(Plan("", (*plan.steps, PlanStep("create_task", "create_task", "", {"title": "y" * 6000}))),
                           bounds) is not None
