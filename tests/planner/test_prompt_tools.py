"""The tool planner's prompt: the documented system text and the JSON planner's user frame."""

from __future__ import annotations

from pathlib import Path

from planner import AI_AVAILABLE_TOOLS, PromptMission, ResolvedInput, build_planner_prompt
from planner.prompt_tools import build_tools_prompt, tools_system_prompt

DOC = Path(__file__).resolve().parents[2] / "docs" / "planner-tools.md"


def test_the_user_frame_is_the_json_planners() -> None:
    mission = PromptMission("T", "K", "Z", [{"startedAt": "x", "overallStatus": "approved", "plan": []}])
    inputs = [ResolvedInput("n1", "notes", "notes", "Notiz", "<user_data>\ngeheim\n</user_data>")]
    messages = build_tools_prompt(mission, inputs, max_rounds=4)
    assert messages.user == build_planner_prompt(mission, inputs, AI_AVAILABLE_TOOLS).user
    assert "höchstens 4 Züge" in messages.system and "create_task" not in messages.system


def test_the_documented_prompt_is_the_code() -> None:
    assert f"```text\n{tools_system_prompt(5)}\n```" in DOC.read_text(encoding="utf-8")
