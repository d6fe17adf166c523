"""The tool-calling planner's loop (the TypeScript service's ``runPlannerLoop``, with validated calls).

Each round: check the budget, send the history (plus transient reminders) with the offered
tools, append the assistant turn, and answer every call with a ``tool`` message. No tool runs
here: a call that passes ``validate_tool_call`` becomes a planned step and is answered with
``success: true``; any other is answered with ``success: false`` and the reason. A turn without
tool calls ends the loop (its text is the summary), so do the round limit and the budget.

The LLM and the budget are injected (``Chat``, ``Budget``); the loop itself does no I/O, no
logging and keeps no clock. A ``ChatFailed`` (every ``LlmError`` of the LLM client is one)
ends the loop with what was recorded and used so far (``LoopResult.error``); the caller
decides what to charge. A round cut off at the token limit (``finish_reason: "length"``) ends
the loop too (``cut-off``): its calls are neither validated nor recorded, and its text is no
summary (``planner.parse.CUT_OFF_REASON`` says why); its tokens count.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NotRequired, Protocol, TypedDict

from planner.chat import AssistantTurn, ChatFailed, RawToolCall
from planner.parse import Plan, PlanStep
from planner.reminders import Reminder, budget_reminder
from planner.schemas import FunctionSchema, tools_to_function_schemas
from planner.storable import RowBounds
from planner.tool_calls import Accepted, RejectReason, validate_tool_call
from planner.tools import AI_AVAILABLE_TOOL_NAMES, Tool

__all__ = ["RECORDED_MESSAGE", "Budget", "BudgetView", "CallVerdict", "Chat", "LoopResult", "StopReason",
           "run_tool_loop", "tool_label"]

RECORDED_MESSAGE = "recorded — pending client application"  # the TypeScript service's stub answer

StopReason = Literal["assistant-stop", "max-rounds", "budget", "llm-error", "cut-off"]


class _FunctionCall(TypedDict):
    name: str
    arguments: str


class WireToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: _FunctionCall


class WireMessage(TypedDict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: NotRequired[list[WireToolCall]]
    tool_call_id: NotRequired[str]


class Chat(Protocol):
    async def __call__(self, messages: Sequence[WireMessage], tools: Sequence[FunctionSchema]) -> AssistantTurn:
        """One round's request; raises ``ChatFailed`` when no usable answer came back."""


@dataclass(frozen=True, slots=True)
class BudgetView:
    """The agent's 24 h use not counting this run's loop, its daily cap and its name."""

    used: int
    cap: int
    agent_name: str


class Budget(Protocol):
    async def __call__(self, round_no: int) -> BudgetView | None:
        """The budget before round ``round_no`` (1-based); None: no budget to respect."""


@dataclass(frozen=True, slots=True)
class CallVerdict:
    round_no: int
    tool: str  # as the model named it (may be anything; see ``tool_label``)
    outcome: Literal["recorded", "rejected"]
    reason: RejectReason | None = None


@dataclass(frozen=True, slots=True)
class LoopResult:
    plan: Plan
    rounds: int
    stop_reason: StopReason
    prompt_tokens: int
    completion_tokens: int
    model: str | None  # of the last answered round; None when no round was answered
    calls: tuple[CallVerdict, ...]
    reminders: tuple[Reminder, ...]
    error: ChatFailed | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def tool_label(name: str) -> str:
    """A bounded metric label: catalog names as they are, anything else ``unknown``."""
    return name if name in AI_AVAILABLE_TOOL_NAMES else "unknown"


async def run_tool_loop(system: str, user: str, tools: Sequence[Tool], *, chat: Chat, budget: Budget,
                        max_rounds: int, max_steps: int, bounds: RowBounds = RowBounds()) -> LoopResult:
    """Run rounds until the model stops calling tools, ``max_rounds`` or the budget ends it.

    Calls are validated within ``bounds`` (what the store holds and the refresh reads back);
    the final summary is not: the caller checks the whole plan (``planner.parse.storage_problem``).
    """
    schemas = tools_to_function_schemas(tools)
    offered: Mapping[str, Tool] = {t.name: t for t in tools}
    history: list[WireMessage] = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    steps: list[PlanStep] = []
    plan_bytes = 0  # the recorded steps' size as stored
    verdicts: list[CallVerdict] = []
    reminders: list[Reminder] = []
    prompt_tokens = completion_tokens = rounds = 0
    model: str | None = None
    summary = ""
    stop: StopReason = "max-rounds"
    error: ChatFailed | None = None
    while rounds < max_rounds:
        view = await budget(rounds + 1)
        extra: list[WireMessage] = []
        if view is not None:
            used = view.used + prompt_tokens + completion_tokens
            if rounds > 0 and used >= view.cap:  # the first round was admitted by the reservation
                stop = "budget"
                break
            reminder = budget_reminder(view.agent_name, used, view.cap)
            if reminder is not None:
                reminders.append(reminder)
                extra.append({"role": "system", "content": reminder.message()})
        rounds += 1
        try:
            turn = await chat([*history, *extra], schemas)  # reminders are never stored
        except ChatFailed as exc:
            stop, error = "llm-error", exc
            break
        prompt_tokens += turn.prompt_tokens
        completion_tokens += turn.completion_tokens
        model = turn.model
        if turn.finish_reason == "length":  # an unfinished answer is never a plan (CUT_OFF_REASON)
            stop = "cut-off"
            break
        assistant: WireMessage = {"role": "assistant", "content": turn.content}
        if turn.tool_calls:
            assistant["tool_calls"] = [_wire_call(c) for c in turn.tool_calls]
        history.append(assistant)
        if not turn.tool_calls:
            summary, stop = turn.content, "assistant-stop"
            break
        for call in turn.tool_calls:
            verdict = validate_tool_call(call.name, call.arguments, offered, steps_recorded=len(steps),
                                         max_steps=max_steps, bounds=bounds, plan_bytes=plan_bytes)
            if isinstance(verdict, Accepted):
                plan_bytes += verdict.stored_bytes
                steps.append(PlanStep(summary=call.name, tool_name=call.name, rationale="", params=verdict.params))
                verdicts.append(CallVerdict(rounds, call.name, "recorded"))
                result = {"success": True, "message": RECORDED_MESSAGE}
            else:
                verdicts.append(CallVerdict(rounds, call.name, "rejected", verdict.reason))
                result = {"success": False, "message": verdict.message}
            history.append({"role": "tool", "tool_call_id": call.id,
                            "content": json.dumps(result, ensure_ascii=False)})
    return LoopResult(Plan(summary, tuple(steps)), rounds, stop, prompt_tokens, completion_tokens, model,
                      tuple(verdicts), tuple(reminders), error)


def _wire_call(call: RawToolCall) -> WireToolCall:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


