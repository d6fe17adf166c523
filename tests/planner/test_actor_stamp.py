from __future__ import annotations

import json

import pytest

from planner.actor_stamp import (
    LEGACY_AI_PRINCIPAL,
    LEGACY_DISPLAY_NAME,
    LEGACY_SYSTEM_PRINCIPAL,
    LEGACY_USER_PRINCIPAL,
    SYSTEM_MIGRATION,
    SYSTEM_MISSION_RUNNER,
    SYSTEM_PROJECTION,
    SYSTEM_RULE,
    SYSTEM_STREAM,
    USER_ACTOR,
    is_ai_actor,
    is_from_mission_runner,
    is_system_actor,
    is_user_actor,
    make_agent_actor,
    make_system_actor,
    make_user_actor,
    mission_runner_actor,
    normalize_actor,
)


def wire(actor: object) -> str:
    return json.dumps(actor, ensure_ascii=False, separators=(",", ":"))


# --- factories (actor.test.ts) --------------------------------------------------------------


def test_user_actor_carries_user_id_and_display_name() -> None:
    assert make_user_actor("user-1", "Till") == {
        "kind": "user",
        "principalId": "user-1",
        "displayName": "Till",
    }


def test_user_actor_default_display_name_is_du() -> None:
    assert make_user_actor("u")["displayName"] == "Du"


def test_agent_actor_carries_mission_context_in_wire_order() -> None:
    actor = make_agent_actor("agent-1", "Cashflow Watcher", "m1", "it1", "weekly review")
    assert wire(actor) == (
        '{"kind":"ai","principalId":"agent-1","displayName":"Cashflow Watcher",'
        '"missionId":"m1","iterationId":"it1","rationale":"weekly review"}'
    )


@pytest.mark.parametrize(
    ("principal", "name"),
    [
        (SYSTEM_PROJECTION, "Projektion"),
        (SYSTEM_RULE, "Regel"),
        (SYSTEM_MIGRATION, "Migration"),
        (SYSTEM_STREAM, "Event-Stream"),
        (SYSTEM_MISSION_RUNNER, "Mission-Runner"),
    ],
)
def test_system_actor_default_display_names(principal: str, name: str) -> None:
    assert make_system_actor(principal) == {
        "kind": "system",
        "principalId": principal,
        "displayName": name,
    }


def test_system_actor_display_name_override() -> None:
    assert make_system_actor(SYSTEM_PROJECTION, "Streak-Tracker")["displayName"] == "Streak-Tracker"


def test_system_actor_for_unknown_principal_has_no_display_name() -> None:
    """JS leaves displayName undefined, which JSON.stringify drops."""
    assert wire(make_system_actor("system:other")) == '{"kind":"system","principalId":"system:other"}'


def test_user_actor_constant() -> None:
    assert dict(USER_ACTOR) == make_user_actor(LEGACY_USER_PRINCIPAL, "Du")
    with pytest.raises(TypeError):
        USER_ACTOR["displayName"] = "x"  # type: ignore[index]


# --- the write-back actor ------------------------------------------------------------------


def test_mission_runner_actor_with_agent() -> None:
    actor = mission_runner_actor(("agent-1", "Recherche"), "m-1", "it-1", "Review progress")
    assert wire(actor) == (
        '{"kind":"ai","principalId":"agent-1","displayName":"Recherche",'
        '"missionId":"m-1","iterationId":"it-1","rationale":"Review progress"}'
    )


def test_mission_runner_actor_legacy() -> None:
    actor = mission_runner_actor(None, "m-1", "it-1", "Review progress")
    assert wire(actor) == (
        '{"kind":"ai","principalId":"legacy:ai-default","displayName":"Mana",'
        '"missionId":"m-1","iterationId":"it-1","rationale":"Review progress"}'
    )


@pytest.mark.parametrize("iteration_id", [None, ""])
def test_mission_runner_actor_without_iteration_is_the_system_runner(
    iteration_id: str | None,
) -> None:
    actor = mission_runner_actor(("agent-1", "Recherche"), "m-1", iteration_id, "x")
    assert wire(actor) == (
        '{"kind":"system","principalId":"system:mission-runner","displayName":"Mission-Runner"}'
    )
    assert is_from_mission_runner(actor)


# --- predicates -----------------------------------------------------------------------------


def test_predicates_identify_kinds() -> None:
    u = make_user_actor("u")
    a = make_agent_actor("a1", "x", "m", "i", "r")
    s = make_system_actor(SYSTEM_PROJECTION)
    assert is_user_actor(u) and not is_user_actor(a)
    assert is_ai_actor(a) and not is_ai_actor(s)
    assert is_system_actor(s) and not is_system_actor(u)


def test_is_from_mission_runner_only_for_that_principal() -> None:
    assert is_from_mission_runner(make_system_actor(SYSTEM_MISSION_RUNNER))
    assert not is_from_mission_runner(make_system_actor(SYSTEM_PROJECTION))
    assert not is_from_mission_runner(
        make_agent_actor(SYSTEM_MISSION_RUNNER, "x", "m", "i", "r")
    )


def test_predicates_handle_none() -> None:
    for predicate in (is_user_actor, is_ai_actor, is_system_actor, is_from_mission_runner):
        assert predicate(None) is False


# --- normalize_actor ------------------------------------------------------------------------


def test_modern_actors_pass_through_unchanged() -> None:
    for actor in (
        make_user_actor("u", "Till"),
        make_agent_actor("a", "A", "m", "i", "r"),
        make_system_actor(SYSTEM_RULE),
    ):
        assert normalize_actor(actor) is actor


def test_legacy_user_gets_principal_and_du() -> None:
    assert normalize_actor({"kind": "user"}) == make_user_actor(LEGACY_USER_PRINCIPAL, "Du")
    assert normalize_actor({"kind": "user", "principalId": "u-1"}) == make_user_actor("u-1", "Du")


def test_legacy_ai_keeps_mission_fields() -> None:
    actor = normalize_actor({"kind": "ai", "missionId": "m1", "iterationId": "i1", "rationale": "r"})
    assert actor == make_agent_actor(LEGACY_AI_PRINCIPAL, LEGACY_DISPLAY_NAME, "m1", "i1", "r")


def test_legacy_ai_without_mission_fields_gets_empty_strings() -> None:
    assert normalize_actor({"kind": "ai", "displayName": "Bot"}) == make_agent_actor(
        LEGACY_AI_PRINCIPAL, "Bot", "", "", ""
    )


def test_old_system_source_maps_to_principal() -> None:
    assert normalize_actor({"kind": "system", "source": "projection"}) == {
        "kind": "system",
        "principalId": "system:projection",
        "displayName": "Projektion",
    }
    runner = normalize_actor({"kind": "system", "source": "mission-runner"})
    assert is_from_mission_runner(runner)
    assert runner.get("displayName") == "Mission-Runner"


def test_system_without_source_is_legacy_system_without_display_name() -> None:
    assert normalize_actor({"kind": "system"}) == {
        "kind": "system",
        "principalId": LEGACY_SYSTEM_PRINCIPAL,
    }
    assert normalize_actor({"kind": "system", "source": "weird"}) == {
        "kind": "system",
        "principalId": "system:weird",
    }


@pytest.mark.parametrize("raw", [None, "hello", 42, [], ["kind"], {"kind": "alien"}, {}])
def test_garbage_becomes_the_legacy_user(raw: object) -> None:
    assert normalize_actor(raw) == make_user_actor(LEGACY_USER_PRINCIPAL, LEGACY_DISPLAY_NAME)


def test_non_string_fields_count_as_missing() -> None:
    """Our deviation: JS's ?? would keep a numeric principalId; we fill the sentinel."""
    assert normalize_actor({"kind": "user", "principalId": 7, "displayName": "X"}) == (
        make_user_actor(LEGACY_USER_PRINCIPAL, "X")
    )
