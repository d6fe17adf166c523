from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.parse import (
    FENCE_PATTERN,
    ParseFailure,
    Plan,
    PlanStep,
    _extract_fenced,
    parse_planner_response,
)
from planner.prompt import PromptMission, build_planner_prompt
from planner.storable import RowBounds
from planner.tools import AI_AVAILABLE_TOOL_NAMES, Tool, ToolParam

KNOWN = frozenset({"create_task", "log_drink"})


def fenced(body: str) -> str:
    return f"```json\n{body}\n```"


def ok(text: str, allowed: frozenset[str] = KNOWN) -> Plan:
    result = parse_planner_response(text, allowed)
    assert isinstance(result, Plan), result
    return result


def fail(text: str, allowed: frozenset[str] = KNOWN) -> ParseFailure:
    result = parse_planner_response(text, allowed)
    assert isinstance(result, ParseFailure), result
    return result


# --- §6.4 valid -----------------------------------------------------------------------------


def test_valid_1_fenced() -> None:
    plan = ok(
        '```json\n{"summary":"Plan für heute","steps":[{"summary":"Task anlegen",'
        '"toolName":"create_task","params":{"title":"Foo"},"rationale":"weil wichtig"}]}\n```'
    )
    assert plan == Plan(
        "Plan für heute", (PlanStep("Task anlegen", "create_task", "weil wichtig", {"title": "Foo"}),)
    )


def test_valid_2_bare_object() -> None:
    plan = ok(
        '{ "summary": "x", "steps": [{ "summary": "log", "toolName": "log_drink", '
        '"params": {}, "rationale": "Routine" }]}'
    )
    assert plan == Plan("x", (PlanStep("log", "log_drink", "Routine", {}),))


def test_valid_3_missing_summaries() -> None:
    plan = ok(fenced('{"steps":[{"toolName":"create_task","params":{},"rationale":"need one"}]}'))
    assert plan.summary == ""
    assert plan.steps[0].summary == ""


def test_valid_4_empty_plan() -> None:
    assert ok(fenced('{"summary":"nothing to do today","steps":[]}')) == Plan(
        "nothing to do today", ()
    )


def test_valid_5_prose_around_a_fence() -> None:
    body = '{"summary":"s","steps":[{"toolName":"create_task","params":{},"rationale":"r"}]}'
    plan = ok(f"Hier ist der Plan:\n```json\n{body}\n```\nDanke")
    assert [s.tool_name for s in plan.steps] == ["create_task"]


# --- §6.4 invalid ---------------------------------------------------------------------------


def test_invalid_1_prose_only() -> None:
    text = "just prose no JSON here"
    assert fail(text) == ParseFailure("no JSON block found", text)


def test_invalid_2_broken_json() -> None:
    result = fail("```json\n{not: valid}\n```")
    assert result.reason.startswith("JSON parse failed: ")
    assert len(result.reason) > len("JSON parse failed: ")
    assert result.raw == "{not: valid}"


def test_invalid_3_no_steps() -> None:
    assert fail(fenced('{"summary":"x"}')) == ParseFailure(
        "`steps` must be an array", '{"summary":"x"}'
    )


def test_invalid_4_unknown_tool() -> None:
    body = '{"summary":"","steps":[{"toolName":"delete_everything","params":{},"rationale":"lol"}]}'
    assert fail(fenced(body)) == ParseFailure(
        'step[0].toolName "delete_everything" is not in the allowed tool set', body
    )


def test_invalid_5_missing_rationale() -> None:
    body = '{"summary":"","steps":[{"toolName":"create_task","params":{"title":"x"}}]}'
    assert fail(fenced(body)).reason == "step[0].rationale is required (user will see this)"


def test_also_bare_json_after_prose_is_not_found() -> None:
    text = 'Plan: {"steps":[]}'
    assert fail(text) == ParseFailure("no JSON block found", text)


def test_also_top_level_array_has_no_steps() -> None:
    assert fail(fenced("[1,2]")) == ParseFailure("`steps` must be an array", "[1,2]")


def test_also_top_level_string_is_not_an_object() -> None:
    assert fail(fenced('"hi"')) == ParseFailure("top-level value is not an object", '"hi"')


# --- the reference's own parser tests (shared-ai parser.test.ts) ----------------------------


def test_prompt_and_parser_round_trip_a_valid_plan() -> None:
    tool = Tool("create_task", "todo", "Creates a task", (ToolParam("title", "string", "Title", True),))
    messages = build_planner_prompt(PromptMission("Test", "", "x"), [], [tool])
    assert "create_task" in messages.system
    response = (
        '```json\n{\n  "summary": "test",\n  "steps": [\n    { "summary": "s", "toolName": '
        '"create_task", "params": { "title": "x" }, "rationale": "why" }\n  ]\n}\n```'
    )
    assert isinstance(parse_planner_response(response, {"create_task"}), Plan)


def test_rejects_unknown_tool_names() -> None:
    text = '{"summary":"","steps":[{"toolName":"delete_everything","params":{},"rationale":"lol"}]}'
    assert isinstance(parse_planner_response(text, {"create_task"}), ParseFailure)


# --- our allowed set (DESIGN §4 row 8) ------------------------------------------------------


def test_a_real_tool_outside_the_passed_set_is_rejected() -> None:
    body = '{"summary":"","steps":[{"toolName":"create_note","params":{},"rationale":"r"}]}'
    assert "create_note" in AI_AVAILABLE_TOOL_NAMES
    assert fail(fenced(body), frozenset({"create_task"})) == ParseFailure(
        'step[0].toolName "create_note" is not in the allowed tool set', body
    )


def test_an_empty_allowed_set_only_accepts_empty_plans() -> None:
    assert ok(fenced('{"steps":[]}'), frozenset()) == Plan("", ())


# --- extraction quirks ----------------------------------------------------------------------


def test_empty_fenced_block_counts_as_not_found() -> None:
    text = "```json\n```"
    assert fail(text) == ParseFailure("no JSON block found", text)


def test_first_fence_wins_even_if_a_later_one_is_valid() -> None:
    text = 'a\n```json\n{oops}\n```\nb\n```json\n{"steps":[]}\n```'
    assert fail(text).raw == "{oops}"


def test_uppercase_json_tag_is_part_of_the_block() -> None:
    result = fail('```JSON\n{"steps":[]}\n```')
    assert result.reason.startswith("JSON parse failed: ")
    assert result.raw == 'JSON\n{"steps":[]}'


def test_unlabelled_fence_and_inline_fence() -> None:
    assert ok('```\n{"steps":[]}\n```') == Plan("", ())
    assert ok('```{"steps":[]}```') == Plan("", ())


def test_json_tag_then_unicode_whitespace() -> None:
    assert ok('```json\u3000\u2028\n{"steps":[]}\n```') == Plan("", ())


def test_overlapping_backticks() -> None:
    assert fail("````json\n{}\n```").raw == "`json\n{}"
    assert fail("````") == ParseFailure("no JSON block found", "````")


def test_long_whitespace_after_an_unclosed_fence_is_linear() -> None:
    """The reference's regex backtracks quadratically here (minutes for 200k spaces)."""
    text = "```json" + " " * 200_000
    assert fail(text) == ParseFailure("no JSON block found", text)


def test_trim_follows_javascript_whitespace() -> None:
    assert ok('\ufeff {"steps":[]} \u3000') == Plan("", ())
    text = '\x1c{"steps":[]}'  # not whitespace to JS, though Python's str.strip() removes it
    assert fail(text) == ParseFailure("no JSON block found", text)


# --- JSON.parse differences -----------------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_non_finite_numbers_are_rejected(literal: str) -> None:
    step = f'{{"toolName":"create_task","params":{{"n":{literal}}},"rationale":"r"}}'
    body = f'{{"summary":"x","steps":[{step}]}}'
    result = fail(fenced(body))
    assert result.reason.startswith("JSON parse failed: ")
    assert result.raw == body


def test_absurd_nesting_and_digits_fail_without_raising() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert fail(fenced(deep)).reason == "JSON parse failed: maximum nesting depth exceeded"
    assert fail(fenced("1" * 5000)).reason.startswith("JSON parse failed: ")


# --- validation details ---------------------------------------------------------------------


@pytest.mark.parametrize("top", ["true", "3", "null", '"s"', "1.5"])
def test_scalars_are_not_objects(top: str) -> None:
    assert fail(fenced(top)).reason == "top-level value is not an object"


def test_steps_must_be_an_array() -> None:
    for steps in ['{"a":1}', '"x"', "null", "3"]:
        assert fail(fenced(f'{{"steps":{steps}}}')).reason == "`steps` must be an array"


@pytest.mark.parametrize("step", ["null", "3", '"x"', "true"])
def test_step_scalar_is_not_an_object(step: str) -> None:
    assert fail(fenced(f'{{"steps":[{step}]}}')).reason == "step[0] is not an object"


@pytest.mark.parametrize("step", ["[]", "{}", '{"toolName":""}', '{"toolName":3}', '{"toolName":null}'])
def test_step_without_a_tool_name(step: str) -> None:
    """Arrays are objects to JS, so an array step fails on its toolName."""
    assert fail(fenced(f'{{"steps":[{step}]}}')).reason == "step[0].toolName missing or not a string"


@pytest.mark.parametrize("rationale", ['""', "null", "1", '["r"]'])
def test_rationale_must_be_a_non_empty_string(rationale: str) -> None:
    body = f'{{"steps":[{{"toolName":"create_task","rationale":{rationale}}}]}}'
    assert fail(fenced(body)).reason == "step[0].rationale is required (user will see this)"


def test_the_first_failing_step_reports_its_index() -> None:
    good = '{"toolName":"create_task","rationale":"r"}'
    body = f'{{"steps":[{good},{good},{{"toolName":"nope","rationale":"r"}}]}}'
    assert fail(fenced(body)).reason == 'step[2].toolName "nope" is not in the allowed tool set'


def test_tool_check_comes_before_rationale_check() -> None:
    body = '{"steps":[{"toolName":"nope"}]}'
    assert fail(fenced(body)).reason == 'step[0].toolName "nope" is not in the allowed tool set'


@pytest.mark.parametrize(
    ("params", "expected"),
    [("[1,2]", [1, 2]), ("{}", {}), ("null", {}), ('"x"', {}), ("3", {}), ("missing", {})],
)
def test_params_objects_and_arrays_kept_else_empty(params: str, expected: object) -> None:
    fields = '"toolName":"create_task","rationale":"r"'
    if params != "missing":
        fields += f',"params":{params}'
    assert ok(fenced(f'{{"steps":[{{{fields}}}]}}')).steps[0].params == expected


def test_non_string_summaries_become_empty() -> None:
    step = '{"summary":["s"],"toolName":"create_task","rationale":"r"}'
    plan = ok(fenced(f'{{"summary":5,"steps":[{step}]}}'))
    assert plan == Plan("", (PlanStep("", "create_task", "r", {}),))


def test_no_step_limit_and_extra_keys_ignored() -> None:
    step = {"toolName": "create_task", "rationale": "r", "extra": True, "params": {"i": 1}}
    plan = ok(fenced(json.dumps({"steps": [step] * 25, "note": "ignored"})))
    assert len(plan.steps) == 25


# --- properties -----------------------------------------------------------------------------


@settings(database=None, deadline=None)
@given(st.text())
def test_never_raises_on_any_text(text: str) -> None:
    """Whatever the LLM answers, the parser returns a value."""
    assert isinstance(parse_planner_response(text, KNOWN), Plan | ParseFailure)


TOKENS = [*'`{}[]":,json \n\t\\0-e.', "NaN", "```", "```json\n", '"steps":', '"toolName":']
FENCY = st.lists(st.sampled_from(TOKENS)).map("".join)


@settings(database=None, deadline=None)
@given(FENCY)
def test_never_raises_on_fence_and_json_shaped_text(text: str) -> None:
    """Text built from fence and JSON characters reaches every branch without raising."""
    assert isinstance(parse_planner_response(text, KNOWN), Plan | ParseFailure)


EXTRACT_TOKENS = [
    *["```", "``", "`", "json", "js", "JSON", "x", "{", "}"],
    *["\n", "\r", " ", "\t", "\u3000", "\ufeff", "\x1c", "\x85"],
]


@settings(database=None, deadline=None, max_examples=500)
@given(st.lists(st.sampled_from(EXTRACT_TOKENS), max_size=30).map("".join))
def test_linear_extraction_equals_the_reference_regex(text: str) -> None:
    """The linear fence scan finds exactly the group the reference's regex captures."""
    match = FENCE_PATTERN.search(text)
    assert _extract_fenced(text) == (match.group(1) if match else None)


# a fence inside a string ends the block; NUL and lone surrogates cannot be stored (see below)
TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00")).filter(lambda s: "```" not in s)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
JSON_LEAF = st.none() | st.booleans() | st.integers(-(10**300), 10**300) | FINITE | TEXT
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=10,
)
STEP = st.fixed_dictionaries(
    {
        "summary": TEXT,
        "toolName": st.sampled_from(sorted(AI_AVAILABLE_TOOL_NAMES)),
        "params": st.dictionaries(TEXT, JSON_VALUE, max_size=4),
        "rationale": TEXT.filter(bool),
    }
)


@settings(database=None, deadline=None)
@given(TEXT, st.lists(STEP, max_size=6), st.booleans())
def test_valid_plans_round_trip(summary: str, steps: list[dict[str, object]], ascii: bool) -> None:
    """A plan serialised by json.dumps inside a ```json fence parses back to the same plan."""
    text = "```json\n" + json.dumps({"summary": summary, "steps": steps}, ensure_ascii=ascii) + "\n```"
    plan = parse_planner_response(text, AI_AVAILABLE_TOOL_NAMES)
    assert isinstance(plan, Plan), plan
    assert plan.summary == summary
    assert [(s.summary, s.tool_name, s.rationale, s.params) for s in plan.steps] == [
        (s["summary"], s["toolName"], s["rationale"], s["params"]) for s in steps
    ]


# --- what cannot be stored ------------------------------------------------------------------


def step_with(params: object, **fields: object) -> str:
    return fenced(json.dumps({"summary": "s", "steps": [
        {"summary": "t", "toolName": "create_task", "rationale": "r", "params": params, **fields}]}))


def nested(levels: int) -> object:
    value: object = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(("text", "reason"), [
    (step_with({"title": "a\u0000b"}),
     "step[0].params cannot be stored: a NUL character in a string (bad-unicode)"),
    (step_with({"title": "\ud800"}), "step[0].params cannot be stored: a lone surrogate in a string (bad-unicode)"),
    (step_with({"\u0000": 1}), "step[0].params cannot be stored: a NUL character in a string (bad-unicode)"),
    (step_with({}, summary="x\u0000"), "step[0].summary cannot be stored: a NUL character in a string (bad-unicode)"),
    (fenced('{"summary": "\\udfff", "steps": []}'),
     "summary cannot be stored: a lone surrogate in a string (bad-unicode)"),
    (step_with({"title": "x" * 70_000}),
     "step[0].params cannot be stored: a string of 70000 chars > 65536 bytes (string-too-long)"),
    (step_with({"title": "é" * 40_000}),
     "step[0].params cannot be stored: a string of 80000 bytes > 65536 (string-too-long)"),
    (step_with(nested(59)), "step[0].params cannot be stored: nesting deeper than 64 (too-deep)"),
    (step_with({"n": int("9" * 400)}),
     "step[0].params cannot be stored: an integer of 400 digits (number-out-of-range)"),
])
def test_what_the_store_cannot_hold_or_the_reader_would_reject_is_a_parse_failure(text: str, reason: str) -> None:
    assert fail(text, frozenset({"create_task"})).reason == reason


def test_the_bounds_are_those_of_the_row_the_plan_is_written_in() -> None:
    """Params sit six levels deep in the written row; the rationale is not stored at all."""
    assert ok(step_with(nested(58)), frozenset({"create_task"})).steps[0].params == nested(58)
    assert ok(step_with({}, rationale="r\u0000" + "x" * 70_000 + "\ud800"), frozenset({"create_task"}))
    small = RowBounds(max_json_depth=16, max_string_bytes=1024, max_row_bytes=65_536)
    body = json.dumps({"steps": [{"toolName": "create_task", "rationale": "r", "params": {"t": "x" * 1000}}] * 70})
    result = parse_planner_response(fenced(body), {"create_task"}, small)
    assert isinstance(result, ParseFailure) and result.raw == body
    assert result.reason == ("the plan cannot be stored: 71682 bytes > 65536 (MANA_AI_MAX_ROW_BYTES) "
                             "(row-too-large)")
    assert isinstance(parse_planner_response(fenced(body), {"create_task"}), Plan)  # the default bounds


@settings(database=None, deadline=None)
@given(st.text(max_size=5), st.sampled_from(["\x00", "\ud800", "\udfff", "\ud83d"]), st.booleans())
def test_any_nul_or_lone_surrogate_in_a_stored_part_is_refused(text: str, bad: str, ascii: bool) -> None:
    body = {"summary": "s", "steps": [{"toolName": "create_task", "rationale": "r", "params": {"t": text + bad}}]}
    result = parse_planner_response(fenced(json.dumps(body, ensure_ascii=ascii)), {"create_task"})
    assert isinstance(result, ParseFailure) and result.reason.endswith("(bad-unicode)")


# --- reasoning output before the answer (a deliberate deviation from the reference) ----------

DRAFT = json.dumps({"summary": "draft", "steps": [{"toolName": "create_task", "params": {"title": "D"},
                                                    "rationale": "draft"}]})
REAL = json.dumps({"summary": "real", "steps": [{"summary": "s", "toolName": "create_task",
                                                  "params": {"title": "R"}, "rationale": "real"}]})


def test_a_qwen3_think_block_with_a_fenced_draft_is_set_aside() -> None:
    text = (f"<think>\nOkay, the user wants a task. A first idea:\n{fenced(DRAFT)}\nBut wait, the title "
            f"should be R.\n</think>\n\n{fenced(REAL)}")
    plan = ok(text)
    assert plan.summary == "real" and plan.steps[0].params == {"title": "R"}


def test_a_deepseek_r1_think_block_with_a_bare_draft_before_a_bare_plan() -> None:
    plan = ok(f"<think>\nThe plan could be {DRAFT}, hmm, no.\n</think>\n{REAL}")
    assert plan.summary == "real"


def test_thinking_and_reasoning_tags_and_several_blocks_are_set_aside() -> None:
    for tag in ("thinking", "reasoning", "THINK"):
        assert ok(f"  <{tag}>{fenced(DRAFT)}</{tag}>\n{fenced(REAL)}").summary == "real"
    assert ok(f"<think>{DRAFT}</think>\n<reasoning>{fenced(DRAFT)}</reasoning>{REAL}").summary == "real"


def test_an_empty_think_block_of_a_non_thinking_turn_is_set_aside() -> None:
    assert ok(f"<think>\n\n</think>\n\n{REAL}").summary == "real"


def test_a_closing_tag_without_an_opening_one_ends_the_reasoning() -> None:
    """Templates that open the block in the prompt (DeepSeek-R1, Qwen3 thinking) send only its end."""
    assert ok(f"The user wants a task.\n{fenced(DRAFT)}\nNo, R.\n</think>\n\n{fenced(REAL)}").summary == "real"


def test_an_unclosed_think_block_is_a_parse_failure_not_its_draft() -> None:
    failure = fail(f"<think>\nLet me draft it:\n{fenced(DRAFT)}\nNow check the title")
    assert failure.reason == "reasoning never ended: <think> without </think>, no answer after it"


def test_reasoning_without_an_answer_says_so() -> None:
    failure = fail(f"<think>\n{DRAFT}\n</think>\n")
    assert failure.reason == "no JSON block found: only reasoning, no answer after it"


def test_think_tags_inside_the_answer_are_content() -> None:
    body = json.dumps({"summary": "<think>x</think>", "steps": [
        {"toolName": "create_task", "params": {"title": "<think>"}, "rationale": "</think> r"}]})
    plan = ok(fenced(body))
    assert plan.summary == "<think>x</think>" and plan.steps[0].params == {"title": "<think>"}
    assert ok(body).steps[0].rationale == "</think> r"


def test_a_lone_closing_tag_inside_a_plan_is_content() -> None:
    body = json.dumps({"summary": "a </think> b", "steps": []})
    assert ok(body).summary == "a </think> b"
    assert ok(fenced(body)).summary == "a </think> b"


@settings(max_examples=200, deadline=None)
@given(reasoning=st.text(), tag=st.sampled_from(["think", "thinking", "reasoning", "Think"]),
       gap=st.sampled_from(["", "\n", "\n\n", "  \n"]), fence=st.booleans())
def test_whatever_the_thinking_holds_the_answer_after_it_decides(reasoning: str, tag: str, gap: str,
                                                                  fence: bool) -> None:
    while re.search(f"</{tag}>", reasoning, flags=re.IGNORECASE):  # a closing tag ends the block
        reasoning = re.sub(f"</{tag}>", "", reasoning, flags=re.IGNORECASE)
    answer = fenced(REAL) if fence else REAL
    assert parse_planner_response(f"{gap}<{tag}>{reasoning}</{tag}>{gap}{answer}", KNOWN) == \
        parse_planner_response(answer, KNOWN)
