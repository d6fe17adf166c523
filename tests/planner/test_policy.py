from __future__ import annotations

import pytest

from planner.errors import PlannerError, PolicyError
from planner.parse import ParseFailure, parse_planner_response
from planner.policy import allowed_tool_names, filter_tools_by_agent_policy
from planner.tools import AI_AVAILABLE_TOOLS, AI_PROPOSABLE_TOOL_NAMES

ALL = [t.name for t in AI_AVAILABLE_TOOLS]
NOTES = {"update_note", "append_to_note", "add_tag_to_note", "create_note"}

# The webapp's DEFAULT_AI_POLICY: 17 propose, 12 auto, default propose.
DEFAULT_AI_POLICY = {
    "tools": {
        **{name: "propose" for name in AI_PROPOSABLE_TOOL_NAMES},
        **{
            name: "auto"
            for name in (
                "get_task_stats", "list_tasks", "list_notes", "get_todays_events",
                "get_drink_progress", "nutrition_summary", "get_places", "location_log",
                "get_habits", "get_contacts", "log_drink", "log_meal",
            )
        },  # fmt: skip
    },
    "defaultForAi": "propose",
}


def names(policy: object) -> list[str]:
    return [t.name for t in filter_tools_by_agent_policy(AI_AVAILABLE_TOOLS, policy)]


@pytest.mark.parametrize("policy", [None, "", 0, False])
def test_no_policy_keeps_every_tool(policy: object) -> None:
    assert names(policy) == ALL


def test_default_policy_keeps_every_tool() -> None:
    assert names(DEFAULT_AI_POLICY) == ALL


def test_deny_by_tool_name() -> None:
    policy = {"tools": {"create_task": "deny", "undo_drink": "deny"}, "defaultForAi": "propose"}
    assert names(policy) == [n for n in ALL if n not in {"create_task", "undo_drink"}]


def test_deny_by_module_default() -> None:
    policy = {"tools": {}, "defaultsByModule": {"notes": "deny"}, "defaultForAi": "propose"}
    assert names(policy) == [n for n in ALL if n not in NOTES]


def test_tool_decision_wins_over_module_default() -> None:
    policy = {
        "tools": {"create_note": "auto"},
        "defaultsByModule": {"notes": "deny"},
        "defaultForAi": "propose",
    }
    assert names(policy) == [n for n in ALL if n not in NOTES - {"create_note"}]


def test_deny_by_default_for_ai() -> None:
    policy = {
        "tools": {"create_task": "propose"},
        "defaultsByModule": {"habits": "auto"},
        "defaultForAi": "deny",
    }
    assert names(policy) == ["create_task", "create_habit", "log_habit"]


@pytest.mark.parametrize("decision", ["auto", "propose"])
def test_auto_and_propose_keep(decision: str) -> None:
    policy = {"tools": dict.fromkeys(ALL, decision), "defaultForAi": "deny"}
    assert names(policy) == ALL


def test_module_default_applies_when_there_is_no_tool_decision() -> None:
    policy = {"tools": {}, "defaultsByModule": {"todo": "propose"}, "defaultForAi": "deny"}
    assert names(policy) == ["create_task", "complete_task", "complete_tasks_by_title"]


@pytest.mark.parametrize("falsy", [None, "", 0, False])
def test_falsy_decisions_fall_through_like_js(falsy: object) -> None:
    policy = {
        "tools": {"create_task": falsy},
        "defaultsByModule": {"todo": falsy},
        "defaultForAi": "deny",
    }
    assert names(policy) == []


def test_missing_default_for_ai_keeps() -> None:
    assert names({"tools": {"create_task": "deny"}}) == ALL[1:]


def test_unknown_decision_strings_keep_like_the_reference() -> None:
    assert names({"tools": {"create_task": "DENY"}, "defaultForAi": "nope"}) == ALL


def test_non_object_module_defaults_are_ignored() -> None:
    assert names({"tools": {}, "defaultsByModule": ["notes"], "defaultForAi": "propose"}) == ALL


@pytest.mark.parametrize(
    "policy",
    [{}, {"defaultForAi": "propose"}, {"tools": None}, {"tools": ["create_task"]}, {"tools": "x"}],
)
def test_policy_without_tools_map_raises(policy: object) -> None:
    with pytest.raises(PolicyError, match="^agent policy has no tools map$"):
        filter_tools_by_agent_policy(AI_AVAILABLE_TOOLS, policy)


@pytest.mark.parametrize("policy", ["deny", 1, True, ["tools"]])
def test_truthy_non_object_policy_raises(policy: object) -> None:
    with pytest.raises(PolicyError, match="^agent policy is not an object$"):
        filter_tools_by_agent_policy(AI_AVAILABLE_TOOLS, policy)


def test_policy_error_is_a_planner_error() -> None:
    assert issubclass(PolicyError, PlannerError)


def test_filter_returns_a_tuple_and_keeps_catalog_order() -> None:
    result = filter_tools_by_agent_policy(AI_AVAILABLE_TOOLS, {"tools": {}})
    assert isinstance(result, tuple)
    assert result == AI_AVAILABLE_TOOLS


def test_allowed_tool_names() -> None:
    assert allowed_tool_names(AI_AVAILABLE_TOOLS[:2]) == frozenset({"create_task", "complete_task"})
    assert allowed_tool_names(()) == frozenset()


def test_denied_tool_is_rejected_by_the_parser() -> None:
    """The parser's allowed set is the agent-filtered set (the TypeScript service accepted any of the 17)."""
    policy = {"tools": {"create_task": "deny"}, "defaultForAi": "propose"}
    allowed = allowed_tool_names(filter_tools_by_agent_policy(AI_AVAILABLE_TOOLS, policy))
    text = '{"summary":"","steps":[{"toolName":"create_task","params":{},"rationale":"r"}]}'
    assert parse_planner_response(text, allowed) == ParseFailure(
        'step[0].toolName "create_task" is not in the allowed tool set', text
    )
