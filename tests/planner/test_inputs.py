"""The `profile` input (userContext): field order, JSON for non-strings, the cut."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings

import strategies
from planner.inputs import PROFILE_FIELDS, RESOLVERS, InputRef, resolved_input
from planner.prompt import ResolvedInput

PROFILE = RESOLVERS["profile"]
REF = InputRef("profile", "userContext", "singleton")


def content(record: dict[str, Any]) -> str:
    return PROFILE.content(record)


def test_profile_is_an_encrypted_resolver_of_app_profile() -> None:
    assert (PROFILE.app_id, PROFILE.encrypted) == ("profile", True)


def test_fields_come_in_the_reference_order_one_per_line() -> None:
    record = {"freeform": "F", "social": "S", "goals": "G", "nutrition": "N", "routine": "R",
              "interests": "I", "about": "A", "id": "singleton", "updatedAt": "2026-04-16T09:00:00.000Z"}
    assert content(record) == "A\nI\nR\nN\nG\nS\nF"


def test_strings_are_kept_as_they_are() -> None:
    assert content({"about": '  "zitiert"\nzweite Zeile  '}) == '  "zitiert"\nzweite Zeile  '


def test_other_json_values_are_compact_json() -> None:
    record = {"about": {"name": "Till", "städte": ["Köln", "Bonn"]}, "interests": ["Laufen", "Jazz"],
              "routine": 7, "nutrition": True, "goals": [], "social": {}, "freeform": 2.5}
    assert content(record) == '{"name":"Till","städte":["Köln","Bonn"]}\n["Laufen","Jazz"]\n7\ntrue\n[]\n{}\n2.5'


def test_absent_null_and_empty_fields_are_skipped() -> None:
    assert content({"about": None, "interests": "", "routine": "R", "goals": "G"}) == "R\nG"
    assert content({"interests": " "}) == " "  # only the empty string is skipped, not blank text
    assert content({"id": "singleton"}) == ""


def test_content_is_cut_at_2000_characters_plus_ellipsis() -> None:
    assert content({"about": "a" * 2000}) == "a" * 2000
    assert content({"about": "a" * 1000, "freeform": "b" * 1000}) == "a" * 1000 + "\n" + "b" * 999 + "…"
    assert content({"about": {"text": "x" * 3000}}) == '{"text":"' + "x" * 1991 + "…"


def test_title_is_nutzerprofil_even_when_the_record_has_a_title() -> None:
    record = {"id": "singleton", "title": "Mein Profil", "about": "Ich"}
    assert resolved_input(REF, PROFILE, record, wrap=True) == ResolvedInput(
        "singleton", "profile", "userContext", "Nutzerprofil", "<user_data>\nIch\n</user_data>")
    assert resolved_input(REF, PROFILE, record, wrap=False).content == "Ich"


@settings(max_examples=200, deadline=None)
@given(record=strategies.json_records((*PROFILE_FIELDS, "id", "title", "updatedAt")))
def test_only_profile_fields_count_and_the_content_stays_bounded(record: dict[str, Any]) -> None:
    """Keys outside the seven profile fields never change the content; it is at most 2000 + `…`."""
    text = content(record)
    assert text == content({k: v for k, v in record.items() if k in PROFILE_FIELDS})
    assert len(text) <= 2001 and (len(text) <= 2000 or text.endswith("…"))
