from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.iteration import iso_ms, plan_to_iteration
from planner.parse import Plan, PlanStep

NOW = "2026-04-16T12:00:00.123Z"


def test_iteration_shape_and_key_order_are_the_references() -> None:
    plan = Plan(
        "Wochenplan",
        (
            PlanStep("Task anlegen", "create_task", "weil wichtig", {"title": "Foo"}),
            PlanStep("", "undo_drink", "Tippfehler", {}),
        ),
    )
    iteration = plan_to_iteration(plan, "it-1", NOW)
    assert json.dumps(iteration, ensure_ascii=False, separators=(",", ":")) == (
        '{"id":"it-1","startedAt":"2026-04-16T12:00:00.123Z","finishedAt":"2026-04-16T12:00:00.123Z",'
        '"plan":[{"id":"it-1-0","summary":"Task anlegen","intent":{"kind":"toolCall",'
        '"toolName":"create_task","params":{"title":"Foo"}},"status":"planned"},'
        '{"id":"it-1-1","summary":"","intent":{"kind":"toolCall","toolName":"undo_drink",'
        '"params":{}},"status":"planned"}],"summary":"Wochenplan",'
        '"overallStatus":"awaiting-review","source":"server"}'
    )


def test_rationale_is_dropped() -> None:
    iteration = plan_to_iteration(Plan("", (PlanStep("s", "t", "RATIONALE", {}),)), "i", NOW)
    assert "RATIONALE" not in json.dumps(iteration)


def test_empty_plan_is_approved() -> None:
    iteration = plan_to_iteration(Plan("nothing to do today", ()), "it-2", NOW)
    assert iteration["overallStatus"] == "approved"
    assert iteration["plan"] == []


def test_step_ids_count_from_zero() -> None:
    steps = tuple(PlanStep(f"s{i}", "create_task", "r", {}) for i in range(12))
    iteration = plan_to_iteration(Plan("", steps), "abc", NOW)
    assert [s["id"] for s in iteration["plan"]] == [f"abc-{i}" for i in range(12)]


def test_array_params_pass_through() -> None:
    iteration = plan_to_iteration(Plan("", (PlanStep("", "create_task", "r", [1, "a"]),)), "i", NOW)
    assert iteration["plan"][0]["intent"]["params"] == [1, "a"]


def test_iso_ms_matches_js_to_iso_string() -> None:
    dt = datetime(2026, 4, 16, 12, 0, 5, 123_999, tzinfo=timezone.utc)
    assert iso_ms(dt) == "2026-04-16T12:00:05.123Z"  # truncated, not rounded
    assert iso_ms(dt.replace(microsecond=0)) == "2026-04-16T12:00:05.000Z"


def test_iso_ms_converts_to_utc() -> None:
    berlin = timezone(timedelta(hours=2))
    assert iso_ms(datetime(2026, 4, 16, 1, 30, tzinfo=berlin)) == "2026-04-15T23:30:00.000Z"


def test_iso_ms_pads_small_years() -> None:
    assert iso_ms(datetime(5, 1, 2, 3, 4, 5, 6000, tzinfo=timezone.utc)) == "0005-01-02T03:04:05.006Z"


def test_iso_ms_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        iso_ms(datetime(2026, 4, 16, 12, 0))


@settings(database=None, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(2, 1, 1),  # keep the UTC instant inside datetime's years 1-9999
        max_value=datetime(9998, 12, 31),
        timezones=st.timezones(),
    )
)
def test_iso_ms_is_sortable_utc_with_milliseconds(dt: datetime) -> None:
    """Every stamp has the fixed JS shape and denotes the instant truncated to milliseconds."""
    text = iso_ms(dt)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    utc = dt.astimezone(timezone.utc)
    assert parsed == utc.replace(microsecond=utc.microsecond // 1000 * 1000)
