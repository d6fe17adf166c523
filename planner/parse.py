"""Strict parser for the planner's answer (reference §6.3/§6.4): pure, never raises.

``parse_planner_response(text, allowed)`` returns a ``Plan`` or a ``ParseFailure`` whose
``reason`` is the reference's string. ``allowed`` is whatever set the caller passes; the
runner passes the agent-filtered tool names (DESIGN §4 row 8), the reference passed all 17.

Ours besides: a plan that cannot be stored as the reader will read it (``planner.storable``:
NUL or lone surrogates, strings, nesting or numbers past the bounds, a plan past
MANA_AI_MAX_ROW_BYTES) is a ``ParseFailure`` too, whose reason names the part and the rule:
``step[0].params cannot be stored: a NUL character in a string (bad-unicode)``.

And reasoning before the answer (``<think>…</think>`` and the like, ``planner.reasoning``) is
set aside before the block is looked for: a draft plan inside the thinking is never the plan,
and a thinking block that never closed is a failure of its own (the reference would have
taken the draft).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from dataclasses import dataclass

from planner._js import JS_WHITESPACE, js_trim
from planner.reasoning import set_aside_reasoning
from planner.storable import PARAMS_DEPTH, ROW_TOO_LARGE, Rejected, RowBounds, stored_size, surely_storable

__all__ = ["CUT_OFF_REASON", "NO_ANSWER_AFTER_REASONING", "JsonParams", "ParseFailure", "Plan", "PlanStep", "parse_planner_response", "storage_problem"]

_WS = "[" + re.escape(JS_WHITESPACE) + "]"
_WS_RUN = re.compile(_WS + "*")
#: The reference's /```(?:json)?\s*\n?([\s\S]*?)\n?```/ with JS's \s spelled out: first fence
#: wins, lowercase "json" only, lazy body. Kept as the specification of ``_extract_fenced``,
#: which finds the same group in linear time: the backtracking regex (V8's too) is quadratic
#: when a fence is followed by a long whitespace run and no closing fence (32k spaces: 5 s).
FENCE_PATTERN = re.compile(r"```(?:json)?" + _WS + r"*\n?([\s\S]*?)\n?```")

#: A step's ``params``: a JSON object, or an array (the reference accepts those as-is).
JsonParams = dict[str, object] | list[object]


@dataclass(frozen=True, slots=True)
class PlanStep:
    summary: str
    tool_name: str
    rationale: str
    params: JsonParams


@dataclass(frozen=True, slots=True)
class Plan:
    summary: str
    steps: tuple[PlanStep, ...]


@dataclass(frozen=True, slots=True)
class ParseFailure:
    reason: str
    raw: str  # the whole text for "no JSON block found", else the extracted block


#: The failure of an answer that ended with ``finish_reason: "length"``. Such an answer is never
#: taken as a plan, even when its text parses: the model did not finish, so what parses may not
#: be what it meant (the parser takes the first fenced block, which may be a draft the model was
#: about to correct; a tool-calling round's last call or final summary may be cut mid-way), and
#: a partly written plan that looks whole is worse than none. One rule, whatever the text: the
#: attempt is a parse failure, retried like any other, and the operator sees why (the limit is
#: too low for the mission, or the model rambles).
CUT_OFF_REASON = "answer cut off at the token limit"

#: The failure of an answer that is empty once its reasoning is set aside (``planner.reasoning``).
NO_ANSWER_AFTER_REASONING = "no JSON block found: only reasoning, no answer after it"


class _Rejected(ValueError):
    """A number JSON.parse would not give back as a finite value."""


def parse_planner_response(text: str, allowed_tool_names: Collection[str],
                           bounds: RowBounds = RowBounds(), *, reasoning_chars: int = 0) -> Plan | ParseFailure:
    """``reasoning_chars``: reasoning the server sent beside the content (``reasoning_content``);
    only whether there was any is used, to say why an empty answer has no plan."""
    answer = set_aside_reasoning(text)  # ours: reasoning before the answer is never the plan
    if answer.unclosed is not None:
        return ParseFailure(answer.unclosed_reason or "", text)
    text = answer.text
    block = _extract_block(text)
    if not block:  # an empty fenced block is "not found" too, as in the reference
        if (answer.reasoning_chars or reasoning_chars) and not js_trim(text):
            return ParseFailure(NO_ANSWER_AFTER_REASONING, text)
        return ParseFailure("no JSON block found", text)
    try:
        value = json.loads(block, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        # Python's json message, not V8's ("Unexpected token ..."): the engine text cannot be
        # matched, only the "JSON parse failed: " prefix is the reference's. ValueError also
        # covers JSONDecodeError, our NaN/Infinity/overflow rejection (JSON.parse has no NaN
        # literals; an overflowing number would become Infinity and then null on write) and
        # the int digit limit; RecursionError is absurdly deep nesting.
        message = "maximum nesting depth exceeded" if isinstance(exc, RecursionError) else exc
        return ParseFailure(f"JSON parse failed: {message}", block)
    if not isinstance(value, dict | list):
        return ParseFailure("top-level value is not an object", block)
    top: dict[str, object] = value if isinstance(value, dict) else {}  # arrays have no keys
    summary = top.get("summary")
    raw_steps = top.get("steps")
    if not isinstance(raw_steps, list):
        return ParseFailure("`steps` must be an array", block)
    steps: list[PlanStep] = []
    for index, raw_step in enumerate(raw_steps):
        step = _validate_step(raw_step, index, allowed_tool_names)
        if isinstance(step, str):
            return ParseFailure(step, block)
        steps.append(step)
    plan = Plan(summary if isinstance(summary, str) else "", tuple(steps))
    problem = storage_problem(plan, bounds)
    return plan if problem is None else ParseFailure(problem, block)


def storage_problem(plan: Plan, bounds: RowBounds) -> str | None:
    """Why ``plan`` cannot be written back as a row the refresh accepts, or None (pure).

    Only what is stored counts (summaries, tool names, params; not rationales). The size is
    that of these parts as Postgres prints them, a little less than the iteration's: the write-
    back checks the whole row again, with the mission's earlier iterations.
    """
    stored = [plan.summary, [[step.summary, step.tool_name, step.params] for step in plan.steps]]
    if surely_storable(stored, bounds, depth=PARAMS_DEPTH):  # the usual small plan: no walk
        return None
    parts: list[tuple[str, object, int]] = [("summary", plan.summary, 0)]
    for index, step in enumerate(plan.steps):
        parts += [(f"step[{index}].summary", step.summary, 0), (f"step[{index}].toolName", step.tool_name, 0),
                  (f"step[{index}].params", step.params, PARAMS_DEPTH)]
    total = 0
    for where, value, depth in parts:
        size = stored_size(value, bounds, depth=depth)
        if isinstance(size, Rejected):
            return f"{where} cannot be stored: {size.detail} ({size.reason})"
        total += size
    if total > bounds.max_row_bytes:
        return (f"the plan cannot be stored: {total} bytes > {bounds.max_row_bytes} "
                f"(MANA_AI_MAX_ROW_BYTES) ({ROW_TOO_LARGE})")
    return None


def _extract_block(text: str) -> str | None:
    body = _extract_fenced(text)
    if body is not None:
        return js_trim(body)
    trimmed = js_trim(text)
    if trimmed.startswith("{") and trimmed.endswith("}"):
        return trimmed
    return None


def _extract_fenced(text: str) -> str | None:
    """``FENCE_PATTERN.search(text).group(1)`` without backtracking.

    The regex matches at the first fence or nowhere: every part before the body may be
    empty, so a match needs only a later fence, and a fence later than the first has none
    if the first has none. Backtracking tries "json" and the longest whitespace run first,
    and none of the skipped characters can start a fence, so the body starts after them and
    ends before the next fence, minus one newline directly in front of it.
    """
    opening = text.find("```")
    if opening < 0:
        return None
    start = opening + 3
    if text.startswith("json", start):
        start += 4
    run = _WS_RUN.match(text, start)  # "*" always matches; the check is for the type
    start = run.end() if run else start
    closing = text.find("```", start)
    if closing < 0:
        return None
    end = closing - 1 if closing > start and text[closing - 1] == "\n" else closing
    return text[start:end]


def _validate_step(raw: object, index: int, allowed: Collection[str]) -> PlanStep | str:
    """The step, or the reason it is rejected."""
    if not isinstance(raw, dict | list):  # JS typeof: arrays are objects too
        return f"step[{index}] is not an object"
    obj: dict[str, object] = raw if isinstance(raw, dict) else {}
    tool_name = obj.get("toolName")
    if not isinstance(tool_name, str) or not tool_name:
        return f"step[{index}].toolName missing or not a string"
    if tool_name not in allowed:
        return f'step[{index}].toolName "{tool_name}" is not in the allowed tool set'
    summary = obj.get("summary")
    rationale = obj.get("rationale")
    if not isinstance(rationale, str) or not rationale:
        return f"step[{index}].rationale is required (user will see this)"
    params = obj.get("params")
    return PlanStep(
        summary=summary if isinstance(summary, str) else "",
        tool_name=tool_name,
        rationale=rationale,
        params=params if isinstance(params, dict | list) else {},
    )


def _reject_constant(name: str) -> float:
    raise _Rejected(f"{name} is not valid JSON")


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise _Rejected(f"number out of range: {literal}")
    return number
