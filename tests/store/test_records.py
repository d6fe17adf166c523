"""Typed views of snapshot records: the TypeScript service's coercions (`ServerMission`,
`toServerAgent`) and the field problems reported for malformed records."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings

import strategies
from store.records import Agent, Mission, agent_field_problems, mission_field_problems

PROPERTY = settings(max_examples=200, deadline=None)

MISSION = {
    "id": "m1", "createdAt": "2026-04-15T08:00:00.000Z", "updatedAt": "2026-04-15T08:00:00.000Z",
    "title": "Wochenreview", "conceptMarkdown": "# Konzept\nJeden Montag.", "objective": "Review progress",
    "inputs": [{"module": "notes", "table": "notes", "id": "n1"}],
    "cadence": {"kind": "interval", "everyMinutes": 60}, "state": "active",
    "nextRunAt": "2026-04-15T09:00:00.000Z", "iterations": [{"id": "it-1", "plan": [], "overallStatus": "running"}],
    "agentId": "legacy:ai-default", "userId": "u-1",
    "grant": {"wrappedKey": "QUJD", "derivation": {"version": "v1", "missionId": "m1", "tables": ["notes"],
                                                   "recordIds": ["notes:n1"]},
              "issuedAt": "2026-04-15T08:05:00.000Z", "expiresAt": "2026-04-22T08:05:00.000Z"},
    "__fieldTimestamps": {"state": "2026-04-15T08:00:00.000Z"},
}
POLICY = {"tools": {"create_task": "propose", "list_notes": "auto"}, "defaultForAi": "propose"}
AGENT = {
    "id": "a1", "createdAt": "2026-04-15T08:00:00.000Z", "updatedAt": "2026-04-15T08:00:00.000Z",
    "name": "Cashflow Watcher", "role": "Finanzen", "avatar": "💶", "systemPrompt": "Sei knapp.",
    "memory": "enc:1:aXY=.bWVt", "policy": POLICY, "maxConcurrentMissions": 2, "maxTokensPerDay": 50000,
    "state": "paused", "userId": "u-1", "__fieldTimestamps": {},
}


# --- Mission.from_record --------------------------------------------------------------------------

def test_a_cookbook_mission_maps_field_by_field() -> None:
    m = Mission.from_record("u-9", MISSION)
    assert m == Mission(
        id="m1", user_id="u-9", title="Wochenreview", objective="Review progress",
        concept_markdown="# Konzept\nJeden Montag.", state="active", next_run_at="2026-04-15T09:00:00.000Z",
        inputs=({"module": "notes", "table": "notes", "id": "n1"},),
        cadence={"kind": "interval", "everyMinutes": 60},
        iterations=({"id": "it-1", "plan": [], "overallStatus": "running"},),
        grant=MISSION["grant"], agent_id="legacy:ai-default",
    )


def test_an_empty_mission_record_gets_the_reference_defaults() -> None:
    assert Mission.from_record("u-1", {}) == Mission(
        id="", user_id="u-1", title="", objective="", concept_markdown="", state="", next_run_at=None,
        inputs=(), cadence=None, iterations=(), grant=None, agent_id=None,
    )


@pytest.mark.parametrize(("value", "expected"), [
    (None, ""), ("", ""), ("Titel", "Titel"), (42, "42"), (-7, "-7"), (4.0, "4"), (4.5, "4.5"), (-0.0, "0"),
    (0.1, "0.1"), (True, "true"), (False, "false"),
])
def test_text_fields_are_string_of_value_or_empty(value: Any, expected: str) -> None:
    """`String(x ?? '')` for title, objective and conceptMarkdown."""
    m = Mission.from_record("u-1", {"title": value, "objective": value, "conceptMarkdown": value})
    assert (m.title, m.objective, m.concept_markdown) == (expected, expected, expected)


@pytest.mark.parametrize(("value", "expected"), [
    (["a", "b"], "a,b"), ([], ""), ([1, [2, 3]], "1,2,3"), ([None, "x"], ",x"), ({"a": 1}, "[object Object]"),
])
def test_text_fields_of_arrays_and_objects_are_stringified_like_javascript(value: Any, expected: str) -> None:
    assert Mission.from_record("u-1", {"title": value}).title == expected


@pytest.mark.parametrize(("value", "expected"), [(1e21, "1e+21"), (1e-7, "1e-7"), (2.5e-8, "2.5e-8")])
def test_text_fields_of_large_and_tiny_numbers_use_javascript_exponent_format(value: float, expected: str) -> None:
    assert Mission.from_record("u-1", {"title": value}).title == expected


def test_a_null_id_reads_like_javascript_string_of_null() -> None:
    assert Mission.from_record("u-1", {"id": None}).id == "null"
    assert Agent.from_record("u-1", {"id": None}).id == "null"


@pytest.mark.parametrize("value", [None, "abc", {"a": 1}, 3, ("x",)])
def test_inputs_and_iterations_are_arrays_or_empty(value: Any) -> None:
    m = Mission.from_record("u-1", {"inputs": value, "iterations": value})
    assert (m.inputs, m.iterations) == ((), ())


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-04-15T09:00:00.000Z", "2026-04-15T09:00:00.000Z"), (None, None), ("", None), (123, None), ([], None),
])
def test_next_run_at_is_a_non_empty_string_or_none(value: Any, expected: str | None) -> None:
    assert Mission.from_record("u-1", {"nextRunAt": value}).next_run_at == expected


@pytest.mark.parametrize(("value", "expected"), [("a1", "a1"), ("", ""), (None, None), (5, None), (["a1"], None)])
def test_agent_id_only_if_a_string(value: Any, expected: str | None) -> None:
    assert Mission.from_record("u-1", {"agentId": value}).agent_id == expected


def test_grant_null_after_revoke_reads_as_none_and_cadence_is_opaque() -> None:
    m = Mission.from_record("u-1", {"grant": None, "cadence": "whatever"})
    assert (m.grant, m.cadence) == (None, "whatever")


def test_the_user_id_comes_from_the_snapshot_row_not_the_record() -> None:
    assert Mission.from_record("different-user", MISSION).user_id == "different-user"


# --- Agent.from_record ----------------------------------------------------------------------------

def test_a_full_agent_maps_field_by_field() -> None:
    assert Agent.from_record("u-1", AGENT) == Agent(
        id="a1", user_id="u-1", name="Cashflow Watcher", role="Finanzen", avatar="💶", system_prompt="Sei knapp.",
        memory="enc:1:aXY=.bWVt", policy=POLICY, state="paused", max_concurrent_missions=2.0,
        max_tokens_per_day=50000.0, deleted_at=None,
    )


def test_an_empty_agent_record_gets_the_reference_defaults() -> None:
    assert Agent.from_record("u-1", {}) == Agent(
        id="", user_id="u-1", name="Unnamed", role="", avatar=None, system_prompt=None, memory=None, policy=None,
        state="active", max_concurrent_missions=1.0, max_tokens_per_day=None, deleted_at=None,
    )


@pytest.mark.parametrize(("value", "expected"), [(None, "Unnamed"), ("", ""), ("Mana", "Mana"), (7, "7"),
                                                 (False, "false")])
def test_name_is_string_of_name_or_unnamed(value: Any, expected: str) -> None:
    assert Agent.from_record("u-1", {"name": value}).name == expected


@pytest.mark.parametrize(("value", "expected"), [(None, "active"), ("paused", "paused"), ("", ""),
                                                 ("archived", "archived")])
def test_state_defaults_to_active_only_when_missing(value: Any, expected: str) -> None:
    assert Agent.from_record("u-1", {"state": value}).state == expected
    assert Agent.from_record("u-1", {}).state == "active"


@pytest.mark.parametrize(("value", "expected"), [(None, ""), ("Recherche", "Recherche"), (3, "3")])
def test_role_is_string_of_role_or_empty(value: Any, expected: str) -> None:
    assert Agent.from_record("u-1", {"role": value}).role == expected


@pytest.mark.parametrize("value", [["tools"], "propose", 1, None, True])
def test_policy_only_if_an_object(value: Any) -> None:
    assert Agent.from_record("u-1", {"policy": value}).policy is None
    assert Agent.from_record("u-1", {"policy": {}}).policy == {}


@pytest.mark.parametrize(("value", "expected"), [
    (None, 1.0), (0, 0.0), (3, 3.0), (2.5, 2.5), (-1, -1.0), ("2", 2.0), (" 4 ", 4.0), ("", 0.0), ("  ", 0.0),
    ("1e1", 10.0), (".5", 0.5), ("+3", 3.0), ("Infinity", math.inf), ("-Infinity", -math.inf),
    (True, 1.0), (False, 0.0),
])
def test_max_concurrent_missions_is_number_of_value_or_one(value: Any, expected: float) -> None:
    """`Number(x ?? 1)`."""
    assert Agent.from_record("u-1", {"maxConcurrentMissions": value}).max_concurrent_missions == expected


def test_max_concurrent_missions_defaults_to_one_when_missing() -> None:
    assert Agent.from_record("u-1", {}).max_concurrent_missions == 1.0


@pytest.mark.parametrize("value", ["abc", "12abc", "NaN", {"n": 1}, [1, 2]])
def test_max_concurrent_missions_is_nan_when_not_numeric(value: Any) -> None:
    assert math.isnan(Agent.from_record("u-1", {"maxConcurrentMissions": value}).max_concurrent_missions)


@pytest.mark.parametrize(("value", "expected"), [
    ("inf", math.nan), ("infinity", math.nan), ("1_000", math.nan), ("0x10", 16.0), ("0b11", 3.0),
    ([], 0.0), ([5], 5.0), (["7"], 7.0),
])
def test_max_concurrent_missions_follows_javascript_number_on_odd_input(value: Any, expected: float) -> None:
    got = Agent.from_record("u-1", {"maxConcurrentMissions": value}).max_concurrent_missions
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


@pytest.mark.parametrize(("value", "expected"), [(50000, 50000.0), (0.5, 0.5), ("1000", None), (True, None),
                                                 (None, None), ([1], None)])
def test_max_tokens_per_day_only_if_a_number(value: Any, expected: float | None) -> None:
    assert Agent.from_record("u-1", {"maxTokensPerDay": value}).max_tokens_per_day == expected


@pytest.mark.parametrize("key", ["avatar", "systemPrompt", "memory", "deletedAt"])
def test_optional_strings_only_if_strings(key: str) -> None:
    attr = {"avatar": "avatar", "systemPrompt": "system_prompt", "memory": "memory", "deletedAt": "deleted_at"}[key]
    assert getattr(Agent.from_record("u-1", {key: "v"}), attr) == "v"
    for bad in (None, 5, ["v"], {"v": 1}, True):
        assert getattr(Agent.from_record("u-1", {key: bad}), attr) is None


# --- field problems -------------------------------------------------------------------------------

def test_well_formed_records_have_no_field_problems() -> None:
    assert mission_field_problems(MISSION) == []
    assert mission_field_problems({}) == []
    assert mission_field_problems({"nextRunAt": None, "agentId": None, "grant": None}) == []
    assert agent_field_problems(AGENT) == []
    assert agent_field_problems({}) == []


@pytest.mark.parametrize(("patch", "problems"), [
    ({"iterations": {"it-1": {}}}, ["iterations is not a list"]),
    ({"iterations": None}, ["iterations is not a list"]),
    ({"inputs": "notes:n1"}, ["inputs is not a list"]),
    ({"nextRunAt": 1776243600000}, ["nextRunAt is not a string"]),
    ({"agentId": ["a1"]}, ["agentId is not a string"]),
    ({"title": 42}, ["title is not a string"]),
    ({"state": True}, ["state is not a string"]),
    ({"grant": "revoked"}, ["grant is not an object"]),
    ({"grant": []}, ["grant is not an object"]),
    ({"iterations": "x", "nextRunAt": 5, "objective": ["o"]},
     ["iterations is not a list", "nextRunAt is not a string", "objective is not a string"]),
])
def test_mission_field_problems_name_each_coerced_field(patch: dict[str, Any], problems: list[str]) -> None:
    assert mission_field_problems({**MISSION, **patch}) == problems


@pytest.mark.parametrize(("patch", "problems"), [
    ({"policy": ["create_task"]}, ["policy is not an object"]),
    ({"policy": "propose"}, ["policy is not an object"]),
    ({"maxConcurrentMissions": "abc"}, ["maxConcurrentMissions is not a number"]),
    ({"maxConcurrentMissions": "2"}, ["maxConcurrentMissions is not a number"]),
    ({"maxConcurrentMissions": True}, ["maxConcurrentMissions is not a number"]),
    ({"maxTokensPerDay": "1000"}, ["maxTokensPerDay is not a number"]),
    ({"name": 7}, ["name is not a string"]),
    ({"state": {"x": 1}}, ["state is not a string"]),
    ({"policy": [], "maxConcurrentMissions": "abc", "role": 1},
     ["policy is not an object", "maxConcurrentMissions is not a number", "role is not a string"]),
])
def test_agent_field_problems_name_each_coerced_field(patch: dict[str, Any], problems: list[str]) -> None:
    assert agent_field_problems({**AGENT, **patch}) == problems


def test_null_optional_agent_fields_are_not_problems() -> None:
    assert agent_field_problems({"policy": None, "maxConcurrentMissions": None, "maxTokensPerDay": None,
                                 "name": None, "state": None, "role": None}) == []


# --- properties -----------------------------------------------------------------------------------

MISSION_KEYS = ("id", "title", "objective", "conceptMarkdown", "state", "nextRunAt", "inputs", "cadence",
                "iterations", "grant", "agentId")
AGENT_KEYS = ("id", "name", "role", "avatar", "systemPrompt", "memory", "policy", "state",
              "maxConcurrentMissions", "maxTokensPerDay", "deletedAt")


@PROPERTY
@given(record=strategies.json_records(MISSION_KEYS))
def test_any_json_mission_record_maps_to_well_typed_fields(record: dict[str, Any]) -> None:
    """Whatever JSON a device left in a mission record, the view is well-typed and never raises;
    a record without field problems keeps its values unchanged."""
    m = Mission.from_record("u-1", record)
    assert all(isinstance(v, str) for v in (m.id, m.title, m.objective, m.concept_markdown, m.state))
    assert m.next_run_at is None or (isinstance(m.next_run_at, str) and m.next_run_at)
    assert isinstance(m.inputs, tuple) and isinstance(m.iterations, tuple)
    assert m.agent_id is None or isinstance(m.agent_id, str)
    assert all(isinstance(p, str) for p in mission_field_problems(record))
    if not mission_field_problems(record):
        assert m.title == (record.get("title") or "")
        assert list(m.iterations) == record.get("iterations", [])


@PROPERTY
@given(record=strategies.json_records(AGENT_KEYS))
def test_any_json_agent_record_maps_to_well_typed_fields(record: dict[str, Any]) -> None:
    """Whatever JSON a device left in an agent record, the view is well-typed and never raises;
    a record without field problems has a numeric (not NaN) concurrency limit."""
    a = Agent.from_record("u-1", record)
    assert all(isinstance(v, str) for v in (a.id, a.name, a.role, a.state))
    assert a.policy is None or isinstance(a.policy, dict)
    assert isinstance(a.max_concurrent_missions, float)
    assert a.max_tokens_per_day is None or isinstance(a.max_tokens_per_day, float)
    if not agent_field_problems(record):
        assert not math.isnan(a.max_concurrent_missions)
        assert a.name == (record["name"] if record.get("name") is not None else "Unnamed")
