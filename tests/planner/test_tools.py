from __future__ import annotations

import dataclasses

import pytest

import planner
from planner.errors import PlannerError, ToolDriftError
from planner.tools import (
    AI_AVAILABLE_TOOL_NAMES,
    AI_AVAILABLE_TOOLS,
    AI_PROPOSABLE_TOOL_NAMES,
    Tool,
    ToolParam,
    check_tool_drift,
)

# §7.1, in order.
CATALOG_ORDER = [
    ("create_task", "todo"),
    ("complete_task", "todo"),
    ("complete_tasks_by_title", "todo"),
    ("create_event", "calendar"),
    ("create_place", "places"),
    ("visit_place", "places"),
    ("undo_drink", "drink"),
    ("save_news_article", "news"),
    ("update_note", "notes"),
    ("append_to_note", "notes"),
    ("add_tag_to_note", "notes"),
    ("create_note", "notes"),
    ("create_journal_entry", "journal"),
    ("create_habit", "habits"),
    ("log_habit", "habits"),
    ("research_news", "news-research"),
    ("create_contact", "contacts"),
]

DRIFT_PREFIX = "[mana-ai] AI_AVAILABLE_TOOLS drift vs AI_PROPOSABLE_TOOL_NAMES. "


def test_catalog_has_the_17_tools_in_reference_order() -> None:
    assert [(t.name, t.module) for t in AI_AVAILABLE_TOOLS] == CATALOG_ORDER


def test_proposable_names_are_the_canonical_grouped_list() -> None:
    assert AI_PROPOSABLE_TOOL_NAMES == (
        "create_task", "complete_task", "complete_tasks_by_title", "create_event",
        "create_place", "visit_place", "undo_drink", "save_news_article", "create_note",
        "update_note", "append_to_note", "add_tag_to_note", "create_journal_entry",
        "create_habit", "log_habit", "research_news", "create_contact",
    )  # fmt: skip


def test_every_tool_name_is_proposable() -> None:
    """tools.test.ts: every tool name is in the shared proposable set."""
    assert all(t.name in AI_PROPOSABLE_TOOL_NAMES for t in AI_AVAILABLE_TOOLS)


def test_every_proposable_name_has_a_tool() -> None:
    """tools.test.ts: every shared name has a tool."""
    assert all(name in AI_AVAILABLE_TOOL_NAMES for name in AI_PROPOSABLE_TOOL_NAMES)


def test_available_tool_names_is_a_frozenset_of_the_catalog() -> None:
    assert isinstance(AI_AVAILABLE_TOOL_NAMES, frozenset)
    assert AI_AVAILABLE_TOOL_NAMES == frozenset(AI_PROPOSABLE_TOOL_NAMES)
    assert len(AI_AVAILABLE_TOOL_NAMES) == 17


def test_every_tool_has_name_module_and_description() -> None:
    for tool in AI_AVAILABLE_TOOLS:
        assert tool.name and tool.module and tool.description


def test_every_required_param_has_a_description() -> None:
    for tool in AI_AVAILABLE_TOOLS:
        for param in tool.params:
            if param.required:
                assert param.description, f"{tool.name}.{param.name}"


def test_param_details_match_the_reference_table() -> None:
    by_name = {t.name: t for t in AI_AVAILABLE_TOOLS}
    assert by_name["create_task"].params == (
        ToolParam("title", "string", "Titel des Tasks", required=True),
        ToolParam("dueDate", "string", "Faelligkeitsdatum (YYYY-MM-DD)"),
        ToolParam("priority", "string", "Prioritaet", enum=("low", "medium", "high")),
        ToolParam("description", "string", "Beschreibung"),
    )
    assert by_name["undo_drink"].params == ()
    limit = by_name["research_news"].params[-1]
    assert (limit.name, limit.type, limit.required) == ("limit", "number", False)
    mood = by_name["create_journal_entry"].params[-1]
    assert mood.enum == ("great", "good", "neutral", "bad", "terrible")
    required = {t.name: [p.name for p in t.params if p.required] for t in AI_AVAILABLE_TOOLS}
    assert required["create_habit"] == ["title", "icon", "color"]
    assert required["create_contact"] == ["firstName"]
    assert required["append_to_note"] == ["noteId", "content"]


def test_descriptions_keep_their_exact_characters() -> None:
    by_name = {t.name: t for t in AI_AVAILABLE_TOOLS}
    assert "\u2014" in by_name["update_note"].description
    assert by_name["complete_tasks_by_title"].description.endswith("enthält (case-insensitive)")


def test_tools_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        AI_AVAILABLE_TOOLS[0].name = "x"  # type: ignore[misc]


def test_drift_guard_passes_for_the_shipped_lists() -> None:
    check_tool_drift()


def test_drift_guard_reports_an_extra_tool() -> None:
    tools = (*AI_AVAILABLE_TOOLS, Tool("delete_everything", "todo", "nope"))
    with pytest.raises(ToolDriftError) as info:
        check_tool_drift(tools, AI_PROPOSABLE_TOOL_NAMES)
    assert str(info.value) == DRIFT_PREFIX + 'extra=["delete_everything"] missing=[]'


def test_drift_guard_reports_missing_and_extra_in_list_order() -> None:
    tools = (*AI_AVAILABLE_TOOLS[2:], Tool("zeta", "m", "d"), Tool("alpha", "m", "d"))
    with pytest.raises(ToolDriftError) as info:
        check_tool_drift(tools, AI_PROPOSABLE_TOOL_NAMES)
    assert str(info.value) == (
        DRIFT_PREFIX + 'extra=["zeta","alpha"] missing=["create_task","complete_task"]'
    )


def test_drift_error_is_a_planner_error() -> None:
    assert issubclass(ToolDriftError, PlannerError)


def test_package_exports_what_it_declares() -> None:
    for name in planner.__all__:
        assert getattr(planner, name) is not None
    public = {n for n in dir(planner) if not n.startswith("_")}
    modules = {"actor_stamp", "errors", "iteration", "parse", "policy", "prompt", "tools", "chat", "inputs", "_js", "research", "annotations",
               "schemas", "tool_calls", "tool_loop", "prompt_tools", "reminders", "deep_research",
               "storable", "reasoning", "plan_schema"}
    assert public - modules == set(planner.__all__)
