"""The bounded decoder and the per-row checks of the refresh (store/bounds.py), pure."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import strategies
from observability.metrics import ROW_REJECT_REASONS
from settings import load_settings
from store.bounds import (MAX_SLOT_BYTES, REASONS, RawRow, Rejected, RowBounds, check_row, decode_json,
                          pg_text_bytes)
from store.fold import ChangeRow

PROPERTY = settings(max_examples=150, deadline=None)
BOUNDS = RowBounds()
SMALL = RowBounds(max_json_depth=4, max_string_bytes=8, max_id_chars=5, max_row_bytes=1000)
AT = datetime(2026, 4, 15, 8, 0, tzinfo=timezone.utc)


def reason(value: Any) -> str | None:
    return value.reason if isinstance(value, Rejected) else None


# --- decode_json ------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ['{"a": [1, 2.5, "x", null, true, {"b": []}]}', "[]", '"é\\u2028"', "-0", "1e308"])
def test_json_within_bounds_decodes_as_json_loads_does(text: str) -> None:
    assert decode_json(text, BOUNDS) == json.loads(text)


def test_sql_null_is_none() -> None:
    assert decode_json(None, BOUNDS) is None


def test_nesting_is_bounded_before_parsing() -> None:
    assert decode_json("[" * 4 + "]" * 4, SMALL) == [[[[]]]]
    assert reason(decode_json("[" * 5 + "]" * 5, SMALL)) == "too-deep"
    assert reason(decode_json('{"a": {"b": {"c": {"d": {}}}}}', SMALL)) == "too-deep"
    # the reproduction: ~990 levels made json.loads raise RecursionError and failed the page
    assert reason(decode_json("[" * 990 + "]" * 990, BOUNDS)) == "too-deep"
    assert reason(decode_json("[" * 100_000, BOUNDS)) == "too-deep"  # not even JSON: the scan stops early


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps(["[[[[[[", "{{{{{{", 'say "[[[[[[" \\'])
    assert decode_json(text, RowBounds(max_json_depth=1)) == ["[[[[[[", "{{{{{{", 'say "[[[[[[" \\']


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


TRICKY_TEXT = st.text(alphabet='[]{}"\\/u0 é', max_size=6)
NESTED = st.recursive(st.none() | st.integers() | TRICKY_TEXT,
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY_TEXT, inner, max_size=3),
                      max_leaves=30)


@PROPERTY
@given(NESTED, st.integers(1, 8), st.booleans())
def test_the_depth_scan_measures_exactly_what_the_parser_nests(value: Any, limit: int, ascii_only: bool) -> None:
    """Brackets, quotes and backslashes inside strings never change the measured depth."""
    decoded = decode_json(json.dumps(value, ensure_ascii=ascii_only), RowBounds(max_json_depth=limit))
    assert (reason(decoded) == "too-deep") == (depth_of(value) > limit)


@pytest.mark.parametrize("text", [
    "1" + "0" * 5000,  # how jsonb prints 1e5000: Python's int() refuses more than 4,300 digits
    "1" + "0" * 400,   # 1e400 as jsonb prints it: an int, but no double holds it
    "-1" + "0" * 400,
    "1e400", "-1e400", "1.5e309",
    "NaN", "Infinity", "-Infinity",  # not JSON, but json.loads would take them
    '{"maxTokensPerDay": 1' + "0" * 400 + "}",
])
def test_numbers_no_double_holds_are_rejected(text: str) -> None:
    assert reason(decode_json(text, BOUNDS)) == "number-out-of-range"


def test_numbers_a_double_holds_pass() -> None:
    assert decode_json("1.7976931348623157e308", BOUNDS) == 1.7976931348623157e308
    assert decode_json(str(2**1023), BOUNDS) == 2**1023
    assert decode_json("1e-400", BOUNDS) == 0.0  # underflow is zero, as in JavaScript


def test_strings_and_keys_are_bounded_in_utf8_bytes() -> None:
    assert decode_json('"12345678"', SMALL) == "12345678"
    assert reason(decode_json('"123456789"', SMALL)) == "string-too-long"
    assert reason(decode_json('"ééééé"', SMALL)) == "string-too-long"  # 5 chars, 10 bytes
    assert reason(decode_json('{"123456789": 1}', SMALL)) == "string-too-long"
    assert reason(decode_json(json.dumps({"a": ["x" * 70_000]}), BOUNDS)) == "string-too-long"


@pytest.mark.parametrize("text", ['"\\ud800"', '{"\\udfff": 1}', '"a\\u0000b"'])
def test_text_postgres_cannot_store_is_rejected(text: str) -> None:
    assert reason(decode_json(text, BOUNDS)) == "bad-unicode"


@pytest.mark.parametrize("text", ["", "{", "[1,]", "{'a': 1}", '"\\x"', "\ufeff[]", '"a\nb"'])
def test_text_that_is_not_json_is_rejected(text: str) -> None:
    assert reason(decode_json(text, BOUNDS)) == "invalid-json"


def test_details_name_sizes_never_content() -> None:
    secret = "GEHEIM" * 20_000
    rejected = decode_json(json.dumps({"note": secret}), BOUNDS)
    assert isinstance(rejected, Rejected) and "GEHEIM" not in rejected.detail
    assert rejected.detail == "a string of 120000 chars > 65536 bytes"


@PROPERTY
@given(strategies.wild_json_values(st.characters()))
def test_any_json_value_decodes_to_itself_or_is_rejected(value: Any) -> None:
    """dumps → decode gives the value back (floats to equal floats) or a Rejected; it never raises."""
    decoded = decode_json(json.dumps(value), BOUNDS)
    if not isinstance(decoded, Rejected):
        assert decoded == value


@PROPERTY
@given(st.one_of(strategies.poison_texts(), strategies.object_texts(st.characters()), st.text()))
def test_any_text_decodes_or_is_rejected_within_bounds(text: str) -> None:
    """Any text: a value no deeper, with no longer string and no bigger number than the bounds,
    or a Rejected with a known reason."""
    decoded = decode_json(text, BOUNDS)
    if isinstance(decoded, Rejected):
        assert decoded.reason in REASONS
        return
    stack = [(decoded, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            assert depth < BOUNDS.max_json_depth
            children = list(item.values()) + list(item) if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, str):
            assert len(item.encode("utf-8")) <= BOUNDS.max_string_bytes and "\x00" not in item
        elif isinstance(item, (int, float)):
            assert math.isfinite(float(item))


# --- check_row --------------------------------------------------------------------------------

def raw(data: Any = None, *, text: str | None = None, stamps: str | None = "{}", user: str = "u-1",
        record: str = "m1", row_bytes: int = 10) -> RawRow:
    return RawRow(user, record, "update", json.dumps(data) if text is None else text, stamps, row_bytes, AT)


def test_a_good_row_becomes_the_change_row_to_fold() -> None:
    row = raw({"title": "x", "nextRunAt": "2026-04-15T09:00:00.000Z"}, stamps='{"title": "2026-04-15T08:00:00.000Z"}')
    assert check_row(row, BOUNDS, missions=True) == ChangeRow(
        "m1", "update", {"title": "x", "nextRunAt": "2026-04-15T09:00:00.000Z"},
        {"title": "2026-04-15T08:00:00.000Z"}, AT)


def test_null_data_and_stamps_pass_for_the_fold_to_judge() -> None:
    assert check_row(raw(text="null", stamps=None), BOUNDS, missions=True) == ChangeRow("m1", "update", None, None, AT)


@pytest.mark.parametrize(("row", "expected"), [
    (raw({}, user="u" * 6), ("id-too-long", "user_id of 6 chars > 5")),
    (raw({}, record="m" * 6), ("id-too-long", "record_id of 6 chars > 5")),
    (raw({"id": "m" * 6}), ("id-too-long", "data.id of 6 chars > 5")),
    (raw({"id": ["abc", "def"]}), ("id-too-long", "data.id of 7 chars > 5")),  # String(["abc","def"])
    (raw({"agentId": "a" * 6}), ("id-too-long", "data.agentId of 6 chars > 5")),
    (raw({}, row_bytes=1001), ("row-too-large", "1001 bytes > 1000")),
    (raw(text="[[[[[]]]]]"), ("too-deep", "data: nesting deeper than 4")),
    (raw({}, stamps='{"title": "123456789"}'), ("string-too-long", "field_timestamps: a string of 9 chars > 8 bytes")),
])
def test_rows_past_a_bound_are_rejected_with_sizes(row: RawRow, expected: tuple[str, str]) -> None:
    rejected = check_row(row, SMALL, missions=True)
    assert isinstance(rejected, Rejected) and (rejected.reason, rejected.detail) == expected


def test_an_id_object_is_short_as_javascript_prints_it() -> None:
    assert isinstance(check_row(raw({"id": {"x": "y" * 50}}), RowBounds(max_id_chars=16), missions=True), ChangeRow)


def test_next_run_at_is_bounded_for_missions_only() -> None:
    long_slot = {"nextRunAt": "2026-04-15T09:00:00.000Z" + "x" * 3000}
    rejected = check_row(raw(long_slot), BOUNDS, missions=True)
    assert isinstance(rejected, Rejected) and rejected.reason == "slot-too-long"
    assert rejected.detail == f"data.nextRunAt of 3024 bytes > {MAX_SLOT_BYTES}"
    assert isinstance(check_row(raw(long_slot), BOUNDS, missions=False), ChangeRow)
    assert isinstance(check_row(raw({"agentId": "a" * 300}), BOUNDS, missions=False), ChangeRow)
    # not a string: Postgres indexes its text, where numbers are written out in full
    assert reason(check_row(raw({"nextRunAt": [1e300] * 9}), BOUNDS, missions=True)) == "slot-too-long"
    assert isinstance(check_row(raw({"nextRunAt": 12345}), BOUNDS, missions=True), ChangeRow)


@pytest.mark.parametrize(("value", "postgres_text"), [
    ("2026-04-15T09:00:00.000Z", "2026-04-15T09:00:00.000Z"), ("é", "é"), (12345, "12345"), (True, "true"),
    (None, "null"), (1e300, "1" + "0" * 300), (1.5e-300, "0." + "0" * 299 + "15"), (-2.5, "-2.5"),
    ([1, "a\n"], '[1, "a\\n"]'), ({"a": {"b": None}}, '{"a": {"b": null}}'), ("\x01", "\x01"), (["\x01"], '["\\u0001"]'),
])
def test_pg_text_bytes_bounds_what_postgres_prints(value: Any, postgres_text: str) -> None:
    assert pg_text_bytes(value) >= len(postgres_text.encode())


def test_reasons_are_the_metric_labels_and_defaults_are_the_settings() -> None:
    assert REASONS == ROW_REJECT_REASONS
    s = load_settings({})
    assert RowBounds(s.max_json_depth, s.max_string_bytes, s.max_id_chars, s.max_row_bytes) == RowBounds()
