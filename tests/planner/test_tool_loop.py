"""The tool-calling loop with a scripted model (no network): history, limits, budget, reminders."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from planner import AI_AVAILABLE_TOOLS
from planner.chat import AssistantTurn, RawToolCall
from planner.schemas import FunctionSchema
from planner.tool_loop import RECORDED_MESSAGE, BudgetView, LoopResult, WireMessage, run_tool_loop, tool_label
from upstream.errors import LlmTimeout


def turn(*calls: tuple[str, object], content: str = "", tokens: tuple[int, int] = (10, 5)) -> AssistantTurn:
    raw = tuple(RawToolCall(f"c{i}", name, args if isinstance(args, str) else json.dumps(args))
                for i, (name, args) in enumerate(calls))
    return AssistantTurn(content, raw, "tool_calls" if calls else "stop", tokens[0], tokens[1], "m", 1)


class ScriptedChat:
    def __init__(self, *turns: AssistantTurn | Exception) -> None:
        self.turns = list(turns)
        self.requests: list[list[dict[str, Any]]] = []
        self.tools: list[list[str]] = []

    async def __call__(self, messages: Sequence[WireMessage], tools: Sequence[FunctionSchema]) -> AssistantTurn:
        self.requests.append([dict(m) for m in messages])
        self.tools.append([t["function"]["name"] for t in tools])
        item = self.turns.pop(0) if len(self.turns) > 1 else self.turns[0]
        if isinstance(item, Exception):
            raise item
        return item


async def no_budget(round_no: int) -> BudgetView | None:
    return None


async def run(chat: ScriptedChat, *, max_rounds: int = 5, max_steps: int = 25, budget: Any = no_budget,
              tools: Any = AI_AVAILABLE_TOOLS) -> LoopResult:
    return await run_tool_loop("SYS", "USER", tools, chat=chat, budget=budget, max_rounds=max_rounds,
                               max_steps=max_steps)


def tool_answers(request: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(m["tool_call_id"], json.loads(m["content"])) for m in request if m["role"] == "tool"]


async def test_a_clean_two_round_plan_keeps_the_history_and_sums_usage() -> None:
    chat = ScriptedChat(turn(("create_task", {"title": "A"}), ("create_note", {"title": "N"})),
                        turn(content="Zwei Vorschläge.", tokens=(20, 3)))
    result = await run(chat)
    assert (result.rounds, result.stop_reason, result.plan.summary) == (2, "assistant-stop", "Zwei Vorschläge.")
    assert [(s.tool_name, s.summary, s.params) for s in result.plan.steps] == [
        ("create_task", "create_task", {"title": "A"}), ("create_note", "create_note", {"title": "N"})]
    assert (result.prompt_tokens, result.completion_tokens) == (30, 8)
    first, second = chat.requests
    assert [m["role"] for m in first] == ["system", "user"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "tool", "tool"]
    assert second[2]["tool_calls"][0] == {"id": "c0", "type": "function",
                                          "function": {"name": "create_task", "arguments": '{"title": "A"}'}}
    assert tool_answers(second) == [("c0", {"success": True, "message": RECORDED_MESSAGE}),
                                    ("c1", {"success": True, "message": RECORDED_MESSAGE})]


async def test_a_rejected_call_is_answered_and_can_be_corrected() -> None:
    chat = ScriptedChat(turn(("create_tsk", {"title": "A"}), ("create_task", {"title": 5})),
                        turn(("create_task", {"title": "A"})), turn(content="ok"))
    result = await run(chat)
    assert [s.params for s in result.plan.steps] == [{"title": "A"}]
    answers = tool_answers(chat.requests[1])
    assert [a["success"] for _, a in answers] == [False, False]
    assert '"create_tsk"' in answers[0][1]["message"] and '"title"' in answers[1][1]["message"]
    assert [(c.round_no, c.tool, c.outcome, c.reason) for c in result.calls] == [
        (1, "create_tsk", "rejected", "unknown-tool"), (1, "create_task", "rejected", "wrong-type"),
        (2, "create_task", "recorded", None)]


async def test_the_round_limit_ends_a_model_that_never_stops() -> None:
    chat = ScriptedChat(turn(("undo_drink", {}), content="noch mehr"))
    result = await run(chat, max_rounds=3)
    assert (result.rounds, result.stop_reason, result.plan.summary) == (3, "max-rounds", "")
    assert len(chat.requests) == 3 and len(result.plan.steps) == 3


async def test_the_step_cap_is_enforced_across_rounds() -> None:
    chat = ScriptedChat(turn(("undo_drink", {}), ("undo_drink", {})), turn(("undo_drink", {})), turn())
    result = await run(chat, max_steps=2)
    assert len(result.plan.steps) == 2
    assert [c.reason for c in result.calls] == [None, None, "step-limit"]


async def test_only_offered_tools_are_sent() -> None:
    chat = ScriptedChat(turn())
    await run(chat, tools=[t for t in AI_AVAILABLE_TOOLS if t.name == "create_task"])
    assert chat.tools == [["create_task"]]


async def test_budget_is_checked_before_every_round_and_stops_between_rounds() -> None:
    seen: list[int] = []

    async def budget(round_no: int) -> BudgetView:
        seen.append(round_no)
        return BudgetView(used=70, cap=100, agent_name="Rita")

    chat = ScriptedChat(turn(("undo_drink", {}), tokens=(10, 5)), turn(("undo_drink", {}), tokens=(10, 5)))
    result = await run(chat, budget=budget)
    # round 1 at 70 % (no reminder), round 2 at 85 % (warn), 100 % before round 3: stop
    assert seen == [1, 2, 3] and result.rounds == 2 and result.stop_reason == "budget"
    assert len(result.plan.steps) == 2 and result.tokens == 30
    assert [r.severity for r in result.reminders] == ["warn"]
    assert [m["role"] for m in chat.requests[0]] == ["system", "user"]
    reminder = chat.requests[1][-1]
    assert reminder["role"] == "system" and reminder["content"].startswith("<reminder>") and "Rita" in reminder["content"]


async def test_reminders_are_transient() -> None:
    async def budget(round_no: int) -> BudgetView:
        return BudgetView(used=80, cap=1000, agent_name="A")  # 8 %: no reminder

    async def high(round_no: int) -> BudgetView:
        return BudgetView(used=800, cap=1000, agent_name="A")  # 80 %: warn every round

    chat = ScriptedChat(turn(("undo_drink", {})), turn())
    await run(chat, budget=high)
    first, second = chat.requests
    assert first[-1]["content"].startswith("<reminder>") and second[-1]["content"].startswith("<reminder>")
    assert sum(1 for m in second if m["content"].startswith("<reminder>")) == 1  # the first was not kept
    chat = ScriptedChat(turn())
    await run(chat, budget=budget)
    assert [m["role"] for m in chat.requests[0]] == ["system", "user"]


async def test_an_llm_error_ends_the_loop_with_what_was_used() -> None:
    chat = ScriptedChat(turn(("undo_drink", {})), LlmTimeout("slow"))
    result = await run(chat)
    assert result.stop_reason == "llm-error" and isinstance(result.error, LlmTimeout)
    assert (result.rounds, result.tokens, len(result.plan.steps)) == (2, 15, 1)


async def test_a_round_cut_off_at_the_token_limit_ends_the_loop_without_its_calls() -> None:
    cut = AssistantTurn("", (RawToolCall("c9", "create_task", '{"title": "A'),), "length", 10, 5, "m", 1)
    chat = ScriptedChat(turn(("undo_drink", {})), cut, turn(content="fertig"))
    result = await run(chat)
    assert (result.stop_reason, result.rounds, result.tokens, len(chat.requests)) == ("cut-off", 2, 30, 2)
    assert [c.tool for c in result.calls] == ["undo_drink"] and result.error is None


async def test_a_final_answer_cut_off_is_not_a_summary() -> None:
    chat = ScriptedChat(AssistantTurn("Zwei Vorschl", (), "length", 10, 5, "m", 1))
    result = await run(chat)
    assert result.stop_reason == "cut-off" and result.plan.summary == ""


def test_the_tool_label_is_bounded() -> None:
    assert tool_label("create_task") == "create_task" and tool_label("rm -rf") == "unknown"
