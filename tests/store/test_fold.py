"""The field-level LWW fold: the TypeScript service's own cases, the fixture cookbook (rows as the
webapp writes them), edge cases, malformed rows, and the laws that make the incremental DB refresh correct."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import strategies
from store.fold import ChangeRow, FoldState, RowProblem, fold_rows, is_live, reference_fold
from store.records import Agent, Mission

PROPERTY = settings(max_examples=200, deadline=None)
PROBLEM_KINDS = {"unknown-op", "data-not-object", "bad-field-timestamps"}


def at(text: str) -> datetime:
    """An aware datetime from an ISO string (`Z` allowed)."""
    return datetime.fromisoformat(text)


def row(op: str, data: Any, stamps: Any = None, created_at: str | datetime = "2026-04-15T00:00:00Z",
        record_id: str = "m1") -> ChangeRow:
    when = at(created_at) if isinstance(created_at, str) else created_at
    return ChangeRow(record_id, op, data, {} if stamps is None else stamps, when)


def stamped(data: dict[str, Any], stamp: str) -> dict[str, str]:
    """The webapp's update stamps: every modified key stamped with the same T."""
    return {k: stamp for k in data}


def js_iso(dt: datetime) -> str:
    """`Date.toISOString()`, written independently of `planner.iteration.iso_ms` (three fractional digits, `Z`)."""
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def merge_raw(record_id: str, rows: Iterable[ChangeRow], *, agents: bool) -> dict[str, Any] | None:
    """A literal port of the TypeScript service's `mergeRaw`, as an oracle for well-formed rows."""
    record: dict[str, Any] | None = None
    ft: dict[str, Any] = {}
    for r in rows:
        if r.op == "delete":
            return None
        if record is None:
            record = {"id": record_id, **(r.data or {})}
            ft = dict(r.field_timestamps or {})
            continue
        if r.data is None:
            continue
        for key, value in r.data.items():
            server_time = (r.field_timestamps or {}).get(key) or js_iso(r.created_at)
            if server_time >= ft.get(key, ""):
                record[key] = value
                ft[key] = server_time
    if record is None or (agents and record.get("deletedAt")):
        return None
    record["__fieldTimestamps"] = ft
    return record


# --- the TypeScript service's missions-projection.test.ts (mergeAndFilter) ----------------------

NOW = "2026-04-15T12:00:00.000Z"


def due_missions(rows: list[ChangeRow], user_id: str, now: str) -> list[Mission]:
    """`mergeAndFilter` through our fold: fold per record, then `mergeAndFilter`'s due filter."""
    by_record: dict[str, list[ChangeRow]] = defaultdict(list)
    for r in rows:
        by_record[r.record_id].append(r)
    due = []
    for record_id, record_rows in by_record.items():
        record = reference_fold(record_id, record_rows, agents=False)
        if record is None or record.get("deletedAt") or record.get("state") != "active":
            continue
        next_run = record.get("nextRunAt")
        if not next_run or next_run > now:
            continue
        due.append(Mission.from_record(user_id, record))
    return due


def mission_insert(record_id: str = "m1", **fields: Any) -> ChangeRow:
    data = {"id": record_id, "title": "x", "state": "active", "nextRunAt": "2026-04-15T00:00:00Z", **fields}
    return row("insert", data, record_id=record_id)


def test_projection_1_returns_an_active_due_mission() -> None:
    due = due_missions([mission_insert()], "u-1", NOW)
    assert [(m.id, m.title) for m in due] == [("m1", "x")]


def test_projection_2_drops_missions_whose_next_run_is_in_the_future() -> None:
    assert due_missions([mission_insert(nextRunAt="2099-01-01T00:00:00Z")], "u-1", NOW) == []


@pytest.mark.parametrize("fields", [{"state": "paused"}, {"state": "done"}, {"state": "archived"},
                                    {"deletedAt": "2026-04-15T00:00:00Z"}, {"nextRunAt": None}])
def test_projection_3_drops_paused_done_deleted_and_unscheduled_missions(fields: dict[str, Any]) -> None:
    assert due_missions([mission_insert(**fields)], "u-1", NOW) == []


def test_projection_4_honours_delete_tombstones() -> None:
    rows = [mission_insert(), row("delete", {"deletedAt": "2026-04-15T01:00:00.000Z"},
                                  created_at="2026-04-15T01:00:00Z")]
    assert due_missions(rows, "u-1", NOW) == []


def test_projection_5_lww_merges_field_updates_from_multiple_rows() -> None:
    rows = [mission_insert(title="old"),
            row("update", {"title": "new"}, {"title": "2026-04-15T01:00:00.000Z"},
                created_at="2026-04-15T01:00:00Z")]
    assert [m.title for m in due_missions(rows, "u-1", NOW)] == ["new"]


def test_projection_6_stamps_the_supplied_user_id() -> None:
    assert [m.user_id for m in due_missions([mission_insert()], "different-user", NOW)] == ["different-user"]


def test_projection_keeps_due_missions_of_several_records_apart() -> None:
    rows = [mission_insert("m1"), mission_insert("m2", state="paused"), mission_insert("m3", title="y")]
    assert sorted((m.id, m.title) for m in due_missions(rows, "u-1", NOW)) == [("m1", "x"), ("m3", "y")]


# --- the TypeScript service's agents-projection.test.ts (mergeRaw) ------------------------------

AGENT_T0 = "2026-04-15T00:00:00Z"


def agent_insert(stamps: dict[str, str] | None = None, **fields: Any) -> ChangeRow:
    data = {"id": "a1", "name": "Cashflow Watcher", "role": "Finanzen", "state": "active", **fields}
    return row("insert", data, stamps, created_at=AGENT_T0, record_id="a1")


def test_agents_1_null_for_empty_input() -> None:
    assert reference_fold("a1", [], agents=True) is None


def test_agents_2_single_insert_builds_the_record() -> None:
    assert reference_fold("a1", [agent_insert()], agents=True) == {
        "id": "a1", "name": "Cashflow Watcher", "role": "Finanzen", "state": "active", "__fieldTimestamps": {},
    }


def test_agents_3_field_level_lww_updates_role_and_keeps_name() -> None:
    rows = [agent_insert(),
            row("update", {"role": "Controlling"}, {"role": "2026-04-15T01:00:00.000Z"},
                created_at="2026-04-15T01:00:00Z", record_id="a1")]
    assert reference_fold("a1", rows, agents=True) == {
        "id": "a1", "name": "Cashflow Watcher", "role": "Controlling", "state": "active",
        "__fieldTimestamps": {"role": "2026-04-15T01:00:00.000Z"},
    }


def test_agents_4_ignores_updates_older_than_the_current_stamp() -> None:
    rows = [agent_insert({"name": "2026-04-15T12:00:00.000Z"}, name="A"),
            row("update", {"name": "B"}, {"name": "2026-04-15T00:00:00.000Z"},
                created_at="2026-04-15T13:00:00Z", record_id="a1")]
    folded = reference_fold("a1", rows, agents=True)
    assert folded is not None
    assert folded["name"] == "A"
    assert folded["__fieldTimestamps"] == {"name": "2026-04-15T12:00:00.000Z"}


def test_agents_5_null_on_delete_tombstone() -> None:
    rows = [agent_insert(), row("delete", {"deletedAt": "2026-04-15T01:00:00.000Z"},
                                created_at="2026-04-15T01:00:00Z", record_id="a1")]
    assert reference_fold("a1", rows, agents=True) is None


def test_agents_6_null_when_deleted_at_is_set() -> None:
    assert reference_fold("a1", [agent_insert(deletedAt="2026-04-15T01:00:00.000Z")], agents=True) is None
    # missions keep such a record (`mergeRaw` drops only agents on it): the due filter drops it later
    kept = reference_fold("a1", [agent_insert(deletedAt="2026-04-15T01:00:00.000Z")], agents=False)
    assert kept is not None and kept["deletedAt"] == "2026-04-15T01:00:00.000Z"


# --- the fixture cookbook (a mission's life as the webapp writes it), folded row by row ---------

M = "6f1b9c2e-3d4a-4b5c-8d6e-7f8091a2b3c4"
U = "u-1"
T1, T2, T3 = "2026-04-15T08:00:00.000Z", "2026-04-15T08:05:00.000Z", "2026-04-15T08:10:00.000Z"
T4, T5, T6 = "2026-04-15T08:15:00.000Z", "2026-04-15T08:20:00.000Z", "2026-04-15T08:25:00.000Z"
N = "2026-04-15T09:20:00.517Z"  # mana-ai's own clock; created_at is the DB's now()
T8, T9, T10 = "2026-04-15T09:20:03.000Z", "2026-04-15T09:30:00.000Z", "2026-04-15T09:40:00.000Z"


def pushed(client_time: str) -> datetime:
    """created_at of a browser change: the push lands ~1.2 s after the local write (µs precision)."""
    return at(client_time) + timedelta(microseconds=1_234_567)


GRANT = {"wrappedKey": "A" * 344,
         "derivation": {"version": "v1", "missionId": M, "tables": ["notes"], "recordIds": ["notes:N1"]},
         "issuedAt": T2, "expiresAt": "2026-04-22T08:05:00.000Z"}
BROWSER_IT = {"id": "it-b", "startedAt": T6, "plan": [], "overallStatus": "running",
              "currentPhase": "resolving-inputs", "phaseStartedAt": T6}
STEP = {"id": "it-s-0", "summary": "Task anlegen",
        "intent": {"kind": "toolCall", "toolName": "create_task", "params": {"title": "Review"}}, "status": "planned"}
SERVER_IT = {"id": "it-s", "startedAt": N, "finishedAt": N, "plan": [STEP], "summary": "Wochenplan",
             "overallStatus": "awaiting-review", "source": "server"}
STAGED_IT = {**SERVER_IT, "plan": [{**STEP, "proposalId": "p-1", "status": "staged"}]}
CREATED = {"id": M, "createdAt": T1, "updatedAt": T1, "title": "Wochenreview", "conceptMarkdown": "# Konzept",
           "objective": "Review progress", "inputs": [{"module": "notes", "table": "notes", "id": "N1"}],
           "cadence": {"kind": "interval", "everyMinutes": 60}, "state": "active",
           "nextRunAt": "2026-04-15T09:00:00.000Z", "iterations": [], "agentId": "legacy:ai-default", "userId": U}


def update_row(data: dict[str, Any], stamp: str, created_at: datetime | None = None) -> ChangeRow:
    return ChangeRow(M, "update", data, stamped(data, stamp), created_at or pushed(stamp))


#: (what happened, the row, the whole snapshot record after folding every row up to it)
COOKBOOK: list[tuple[str, ChangeRow, dict[str, Any]]] = [
    ("1 create", ChangeRow(M, "insert", CREATED, {}, pushed(T1)),
     {**CREATED, "__fieldTimestamps": {}}),
    ("2 attach grant", update_row({"grant": GRANT, "updatedAt": T2}, T2),
     {**CREATED, "grant": GRANT, "updatedAt": T2, "__fieldTimestamps": {"grant": T2, "updatedAt": T2}}),
    ("3 revoke grant", update_row({"grant": None, "updatedAt": T3}, T3),
     {**CREATED, "grant": None, "updatedAt": T3, "__fieldTimestamps": {"grant": T3, "updatedAt": T3}}),
    ("4a pause", update_row({"state": "paused", "updatedAt": T4}, T4),
     {**CREATED, "grant": None, "state": "paused", "updatedAt": T4,
      "__fieldTimestamps": {"grant": T3, "state": T4, "updatedAt": T4}}),
    ("4b resume", update_row({"state": "active", "nextRunAt": "2026-04-15T09:20:00.000Z", "updatedAt": T5}, T5),
     {**CREATED, "grant": None, "state": "active", "nextRunAt": "2026-04-15T09:20:00.000Z", "updatedAt": T5,
      "__fieldTimestamps": {"grant": T3, "state": T5, "nextRunAt": T5, "updatedAt": T5}}),
    ("6 foreground iteration", update_row({"iterations": [BROWSER_IT], "updatedAt": T6}, T6),
     {**CREATED, "grant": None, "state": "active", "nextRunAt": "2026-04-15T09:20:00.000Z",
      "iterations": [BROWSER_IT], "updatedAt": T6,
      "__fieldTimestamps": {"grant": T3, "state": T5, "nextRunAt": T5, "iterations": T6, "updatedAt": T6}}),
    ("7 mana-ai write-back",
     update_row({"iterations": [BROWSER_IT, SERVER_IT], "updatedAt": N}, N,
                created_at=datetime(2026, 4, 15, 9, 20, 0, 518_204, tzinfo=timezone.utc)),
     {**CREATED, "grant": None, "state": "active", "nextRunAt": "2026-04-15T09:20:00.000Z",
      "iterations": [BROWSER_IT, SERVER_IT], "updatedAt": N,
      "__fieldTimestamps": {"grant": T3, "state": T5, "nextRunAt": T5, "iterations": N, "updatedAt": N}}),
    ("8 staging write-back", update_row({"iterations": [BROWSER_IT, STAGED_IT], "updatedAt": T8}, T8),
     {**CREATED, "grant": None, "state": "active", "nextRunAt": "2026-04-15T09:20:00.000Z",
      "iterations": [BROWSER_IT, STAGED_IT], "updatedAt": T8,
      "__fieldTimestamps": {"grant": T3, "state": T5, "nextRunAt": T5, "iterations": T8, "updatedAt": T8}}),
    ("4c complete", update_row({"state": "done", "nextRunAt": None, "updatedAt": T9}, T9),
     {**CREATED, "grant": None, "state": "done", "nextRunAt": None,
      "iterations": [BROWSER_IT, STAGED_IT], "updatedAt": T9,
      "__fieldTimestamps": {"grant": T3, "state": T9, "nextRunAt": T9, "iterations": T8, "updatedAt": T9}}),
    ("5 soft delete", ChangeRow(M, "delete", {"deletedAt": T10}, {}, pushed(T10)),
     {**CREATED, "grant": None, "state": "done", "nextRunAt": None,
      "iterations": [BROWSER_IT, STAGED_IT], "updatedAt": T9, "deletedAt": T10,
      "__fieldTimestamps": {"grant": T3, "state": T9, "nextRunAt": T9, "iterations": T8, "updatedAt": T9}}),
]
COOKBOOK_ROWS = [r for _, r, _ in COOKBOOK]


@pytest.mark.parametrize("step", range(len(COOKBOOK)), ids=[name for name, _, _ in COOKBOOK])
def test_cookbook_rows_fold_into_the_expected_snapshot(step: int) -> None:
    problems: list[RowProblem] = []
    state = fold_rows(M, COOKBOOK_ROWS[: step + 1], problems=problems)
    assert state.as_snapshot_record() == COOKBOOK[step][2]
    assert state.tombstone is (COOKBOOK[step][0] == "5 soft delete")
    assert problems == []


def test_cookbook_folded_one_row_at_a_time_equals_the_full_fold() -> None:
    state = FoldState()
    for _, r, expected in COOKBOOK:
        state = fold_rows(M, [r], seed=state)
        assert state.as_snapshot_record() == expected


def test_cookbook_due_and_reference_views() -> None:
    before_pause = fold_rows(M, COOKBOOK_ROWS[:3])
    assert is_live(before_pause, honour_deleted_at=False)
    mission = Mission.from_record(U, before_pause.as_snapshot_record())
    assert (mission.state, mission.next_run_at, mission.grant, mission.agent_id) == (
        "active", "2026-04-15T09:00:00.000Z", None, "legacy:ai-default")
    assert reference_fold(M, COOKBOOK_ROWS, agents=False) is None  # the delete is a tombstone


def test_write_back_older_than_the_device_loses_even_when_it_lands_later() -> None:
    """Clock skew between device and server: the row's stamps, not its created_at, decide."""
    skewed = update_row({"iterations": [SERVER_IT], "updatedAt": "2026-04-15T08:00:00.000Z"},
                        "2026-04-15T08:00:00.000Z", created_at=pushed(T8))
    state = fold_rows(M, [*COOKBOOK_ROWS[:8], skewed])
    assert state.as_snapshot_record() == COOKBOOK[7][2]


def test_agent_create_row() -> None:
    data = {"id": "a-9", "createdAt": T1, "updatedAt": T1, "name": "Recherche", "role": "Sucht Quellen",
            "avatar": "🔎", "systemPrompt": "enc:1:aXY=.Y3Q=", "memory": "enc:1:aXY=.bWVt",
            "policy": {"tools": {"create_task": "propose"}, "defaultForAi": "propose"},
            "maxConcurrentMissions": 1, "state": "active", "userId": U}
    folded = reference_fold("a-9", [ChangeRow("a-9", "insert", data, {}, pushed(T1))], agents=True)
    assert folded == {**data, "__fieldTimestamps": {}}
    agent = Agent.from_record(U, folded)
    assert (agent.name, agent.avatar, agent.max_concurrent_missions, agent.deleted_at) == ("Recherche", "🔎", 1.0, None)


# --- edge cases ---------------------------------------------------------------------------------

def test_a_tie_goes_to_the_later_row() -> None:
    rows = [row("insert", {"title": "a"}),
            row("update", {"title": "b"}, {"title": T2}, "2026-04-15T08:06:00Z"),
            row("update", {"title": "c"}, {"title": T2}, "2026-04-15T08:07:00Z")]
    assert fold_rows("m1", rows) == FoldState({"id": "m1", "title": "c"}, {"title": T2})


def test_a_tie_between_a_fallback_stamp_and_an_explicit_stamp_goes_to_the_later_row() -> None:
    rows = [row("insert", {"title": "a"}),
            row("update", {"title": "b"}, {}, "2026-04-15T08:05:00.000900Z"),  # fallback …08:05:00.000Z = T2
            row("update", {"title": "c"}, {"title": T2}, "2026-04-15T08:05:00.001Z")]
    assert fold_rows("m1", rows) == FoldState({"id": "m1", "title": "c"}, {"title": T2})


def test_an_update_with_null_data_is_skipped() -> None:
    rows = [row("insert", {"title": "a"}), row("update", None, {"title": T3}, "2026-04-15T09:00:00Z")]
    problems: list[RowProblem] = []
    assert fold_rows("m1", rows, problems=problems) == FoldState({"id": "m1", "title": "a"}, {})
    assert problems == []


def test_a_null_value_is_written_like_any_other() -> None:
    rows = [row("insert", {"title": "a", "nextRunAt": T2}),
            row("update", {"nextRunAt": None}, {"nextRunAt": T3}, "2026-04-15T09:00:00Z")]
    assert fold_rows("m1", rows).record == {"id": "m1", "title": "a", "nextRunAt": None}


def test_the_first_row_seeds_stamps_from_its_field_timestamps() -> None:
    first = row("update", {"title": "a", "state": "paused"},
                {"title": T3, "state": T1, "orphan": T2, "bad": 5}, "2026-04-15T08:00:00Z")
    state = fold_rows("m1", [first])
    assert state == FoldState({"id": "m1", "title": "a", "state": "paused"},
                              {"title": T3, "state": T1, "orphan": T2})
    later = [row("update", {"title": "b", "state": "active"}, {"title": T2, "state": T2}, "2026-04-15T09:00:00Z")]
    assert fold_rows("m1", later, seed=state).record == {"id": "m1", "title": "a", "state": "active"}


def test_the_first_row_seeds_the_record_whatever_its_op_and_drops_the_hidden_key() -> None:
    first = row("update", {"title": "a", "__fieldTimestamps": {"title": T9}}, {"title": T1})
    assert fold_rows("m1", [first]) == FoldState({"id": "m1", "title": "a"}, {"title": T1})
    assert fold_rows("m1", [row("update", None, None)]) == FoldState({"id": "m1"}, {})


def test_a_first_row_without_data_still_seeds_and_then_any_update_wins() -> None:
    rows = [row("insert", None), row("update", {"title": "z"}, {"title": T1}, "2026-04-15T09:00:00Z")]
    assert fold_rows("m1", rows) == FoldState({"id": "m1", "title": "z"}, {"title": T1})


@pytest.mark.parametrize(("created_at", "expected"), [
    (datetime(2026, 4, 15, 10, 0, 0, 123_999, tzinfo=timezone.utc), "2026-04-15T10:00:00.123Z"),
    (datetime(2026, 4, 15, 10, 0, 0, 0, tzinfo=timezone.utc), "2026-04-15T10:00:00.000Z"),
    (datetime(2026, 4, 15, 12, 0, 0, 999_999, tzinfo=timezone(timedelta(hours=2))), "2026-04-15T10:00:00.999Z"),
])
def test_the_fallback_stamp_is_iso_ms_of_created_at(created_at: datetime, expected: str) -> None:
    rows = [row("insert", {"title": "a"}), row("update", {"title": "b", "state": "x"}, {"state": T1}, created_at)]
    state = fold_rows("m1", rows)
    assert state.stamps == {"title": expected, "state": T1}
    assert state.record == {"id": "m1", "title": "b", "state": "x"}


def test_a_fallback_stamp_without_ms_digits_would_sort_wrongly_so_it_has_them() -> None:
    """`…:00Z` sorts after `…:00.500Z`; the fallback must carry `.000` to lose to it."""
    rows = [row("insert", {"title": "a"}),
            row("update", {"title": "b"}, {"title": "2026-04-15T10:00:00.500Z"}, "2026-04-15T09:00:00Z"),
            row("update", {"title": "c"}, {}, "2026-04-15T10:00:00Z")]
    assert fold_rows("m1", rows).record == {"id": "m1", "title": "b"}


def test_an_empty_string_stamp_falls_back_to_created_at() -> None:
    rows = [row("insert", {"title": "a"}), row("update", {"title": "b"}, {"title": ""}, "2026-04-15T10:00:00Z")]
    assert fold_rows("m1", rows).stamps == {"title": "2026-04-15T10:00:00.000Z"}


def test_delete_is_terminal_and_keeps_deleted_at() -> None:
    rows = [row("insert", {"title": "a", "state": "active"}),
            row("update", {"state": "paused"}, {"state": T2}, "2026-04-15T08:06:00Z"),
            row("delete", {"deletedAt": T3}, {}, "2026-04-15T08:11:00Z"),
            row("insert", {"title": "again"}, {}, "2026-04-15T08:12:00Z"),
            row("update", {"deletedAt": None, "state": "active"}, {"deletedAt": T9, "state": T9},
                "2026-04-15T09:31:00Z")]
    expected = FoldState({"id": "m1", "title": "a", "state": "paused", "deletedAt": T3}, {"state": T2}, tombstone=True)
    for k in range(3, len(rows) + 1):
        assert fold_rows("m1", rows[:k]) == expected
    assert fold_rows("m1", rows[3:], seed=expected) is expected
    assert not is_live(expected, honour_deleted_at=False)
    assert reference_fold("m1", rows, agents=False) is None
    assert reference_fold("m1", rows, agents=True) is None


@pytest.mark.parametrize(("data", "kept"), [
    ({}, {"id": "m1"}), (None, {"id": "m1"}), ({"deletedAt": None}, {"id": "m1"}),
    ({"deletedAt": T3, "title": "ignored"}, {"id": "m1", "deletedAt": T3}),
])
def test_a_delete_as_first_row_is_a_tombstone_with_only_the_id(data: Any, kept: dict[str, Any]) -> None:
    state = fold_rows("m1", [row("delete", data)])
    assert state == FoldState(kept, {}, tombstone=True)
    assert not state.empty


def test_an_agent_whose_deleted_at_is_cleared_later_is_live_again() -> None:
    rows = [agent_insert(),
            row("update", {"deletedAt": T2, "updatedAt": T2}, stamped({"deletedAt": T2, "updatedAt": T2}, T2),
                "2026-04-15T08:06:00Z", record_id="a1"),
            row("update", {"deletedAt": None, "updatedAt": T3}, stamped({"deletedAt": None, "updatedAt": T3}, T3),
                "2026-04-15T08:11:00Z", record_id="a1")]
    expected = {"id": "a1", "name": "Cashflow Watcher", "role": "Finanzen", "state": "active",
                "deletedAt": None, "updatedAt": T3, "__fieldTimestamps": {"deletedAt": T3, "updatedAt": T3}}
    assert reference_fold("a1", rows[:2], agents=True) is None
    assert reference_fold("a1", rows, agents=True) == expected
    assert merge_raw("a1", rows, agents=True) == expected
    for k in range(len(rows) + 1):
        split = fold_rows("a1", rows[k:], seed=fold_rows("a1", rows[:k]))
        assert is_live(split, honour_deleted_at=True)
        assert split.as_snapshot_record() == expected
    deleted = fold_rows("a1", rows[:2])
    assert deleted.record is not None and deleted.record["deletedAt"] == T2
    assert not deleted.tombstone and not is_live(deleted, honour_deleted_at=True)
    assert is_live(deleted, honour_deleted_at=False)


def test_an_empty_history_is_the_empty_state() -> None:
    assert fold_rows("m1", []) == FoldState()
    assert FoldState().empty
    assert reference_fold("m1", [], agents=False) is None


# --- malformed rows -----------------------------------------------------------------------------

@pytest.mark.parametrize("data", [["title", "x"], "paused", 42, 0.5, True])
def test_non_object_data_is_skipped_and_reported(data: Any) -> None:
    rows = [row("insert", {"title": "a"}),
            row("update", data, {"title": T2}, "2026-04-15T08:06:00Z"),
            row("update", {"state": "done"}, {"state": T3}, "2026-04-15T08:11:00Z")]
    problems: list[RowProblem] = []
    assert fold_rows("m1", rows, problems=problems) == FoldState({"id": "m1", "title": "a", "state": "done"},
                                                                 {"state": T3})
    assert [(p.record_id, p.kind) for p in problems] == [("m1", "data-not-object")]


def test_non_object_data_in_the_first_row_does_not_seed() -> None:
    rows = [row("insert", ["x"]), row("update", {"title": "b"}, {"title": T2}, "2026-04-15T08:06:00Z"),
            row("update", {"title": "c"}, {"title": T1}, "2026-04-15T08:07:00Z")]
    problems: list[RowProblem] = []
    # the second row seeds the record and its stamps, so the third (older stamp) loses
    assert fold_rows("m1", rows, problems=problems) == FoldState({"id": "m1", "title": "b"}, {"title": T2})
    assert [p.kind for p in problems] == ["data-not-object"]


def test_an_unknown_op_is_skipped_and_reported() -> None:
    rows = [row("upsert", {"title": "first"}, {"title": T9}),
            row("insert", {"title": "a"}, {}, "2026-04-15T08:01:00Z"),
            row("upsert", {"title": "z"}, {"title": T9}, "2026-04-15T08:02:00Z")]
    problems: list[RowProblem] = []
    assert fold_rows("m1", rows, problems=problems) == FoldState({"id": "m1", "title": "a"}, {})
    assert [(p.kind, p.detail) for p in problems] == [("unknown-op", "op='upsert'")] * 2


@pytest.mark.parametrize("field_timestamps", [[T9], "2026-04-15T09:30:00.000Z", 7])
def test_non_object_field_timestamps_count_as_empty_and_are_reported(field_timestamps: Any) -> None:
    rows = [row("insert", {"title": "a"}),
            row("update", {"title": "b"}, field_timestamps, "2026-04-15T08:06:00.250Z")]
    problems: list[RowProblem] = []
    assert fold_rows("m1", rows, problems=problems) == FoldState({"id": "m1", "title": "b"},
                                                                 {"title": "2026-04-15T08:06:00.250Z"})
    assert [p.kind for p in problems] == ["bad-field-timestamps"]


def test_non_object_field_timestamps_in_the_first_row_seed_no_stamps() -> None:
    problems: list[RowProblem] = []
    assert fold_rows("m1", [row("update", {"title": "a"}, [T9])], problems=problems) == FoldState(
        {"id": "m1", "title": "a"}, {})
    assert [p.kind for p in problems] == ["bad-field-timestamps"]


def test_a_row_with_both_bad_stamps_and_bad_data_reports_both() -> None:
    rows = [row("insert", {"title": "a"}), row("update", "x", ["y"], "2026-04-15T08:06:00Z")]
    problems: list[RowProblem] = []
    assert fold_rows("m1", rows, problems=problems) == FoldState({"id": "m1", "title": "a"}, {})
    assert [p.kind for p in problems] == ["bad-field-timestamps", "data-not-object"]


@pytest.mark.parametrize("bad_stamp", [12345, None, True, {"at": T9}, ["x"]])
def test_a_non_string_stamp_value_falls_back_to_created_at(bad_stamp: Any) -> None:
    rows = [row("insert", {"title": "a", "state": "active"}),
            row("update", {"title": "b", "state": "paused"}, {"title": bad_stamp, "state": T2},
                "2026-04-15T08:06:00.250Z")]
    problems: list[RowProblem] = []
    state = fold_rows("m1", rows, problems=problems)
    assert state == FoldState({"id": "m1", "title": "b", "state": "paused"},
                              {"title": "2026-04-15T08:06:00.250Z", "state": T2})
    assert problems == []  # coerced silently: the row as a whole is well-formed


def test_malformed_rows_are_reported_once_and_the_rest_folds_as_usual() -> None:
    rows = [row("insert", {"title": "a", "state": "active"}),
            row("upsert", {"state": "paused"}, {"state": T9}, "2026-04-15T08:01:00Z"),
            row("update", [1, 2], {}, "2026-04-15T08:02:00Z"),
            row("update", {"title": "b"}, ["nope"], "2026-04-15T08:03:00.007Z"),
            row("update", {"state": "done"}, {"state": 99}, "2026-04-15T08:04:00Z"),
            row("update", 17, None, "2026-04-15T08:05:00Z"),
            row("update", {"title": "c"}, {"title": T1}, "2026-04-15T08:06:00Z")]
    problems: list[RowProblem] = []
    state = fold_rows("m1", rows, problems=problems)
    assert state == FoldState({"id": "m1", "title": "b", "state": "done"},
                              {"title": "2026-04-15T08:03:00.007Z", "state": "2026-04-15T08:04:00.000Z"})
    assert [p.kind for p in problems] == ["unknown-op", "data-not-object", "bad-field-timestamps", "data-not-object"]
    assert all(p.record_id == "m1" for p in problems)


def test_without_a_problems_list_bad_rows_are_still_skipped() -> None:
    rows = [row("insert", {"title": "a"}), row("upsert", {"title": "z"}), row("update", "x")]
    assert fold_rows("m1", rows) == FoldState({"id": "m1", "title": "a"}, {})


def test_rows_after_a_tombstone_are_not_reported() -> None:
    rows = [row("insert", {"title": "a"}), row("delete", {}), row("upsert", {}), row("update", "x", [1])]
    problems: list[RowProblem] = []
    assert fold_rows("m1", rows, problems=problems).tombstone
    assert problems == []


# --- snapshot JSON --------------------------------------------------------------------------------

def test_snapshot_record_round_trip() -> None:
    state = fold_rows(M, COOKBOOK_ROWS[:8])
    stored = json.loads(json.dumps(state.as_snapshot_record()))
    assert FoldState.from_snapshot_record(stored, False) == state


def test_a_stored_snapshot_with_bad_stamps_keeps_only_string_stamps() -> None:
    restored = FoldState.from_snapshot_record({"id": "m1", "title": "a", "__fieldTimestamps": {"title": T1, "x": 5}},
                                              False)
    assert restored == FoldState({"id": "m1", "title": "a"}, {"title": T1})
    for bad in ([T1], "x", None):
        assert FoldState.from_snapshot_record({"id": "m1", "__fieldTimestamps": bad}, True) == FoldState(
            {"id": "m1"}, {}, tombstone=True)


# --- properties -----------------------------------------------------------------------------------

def classify(rows: list[ChangeRow]) -> list[str]:
    """The problem kinds a history should report: each row up to the first delete, in order."""
    kinds = []
    for r in rows:
        if r.op not in {"insert", "update", "delete"}:
            kinds.append("unknown-op")
            continue
        if r.op == "delete":
            break
        if r.field_timestamps is not None and not isinstance(r.field_timestamps, dict):
            kinds.append("bad-field-timestamps")
        if r.data is not None and not isinstance(r.data, dict):
            kinds.append("data-not-object")
    return kinds


@PROPERTY
@given(rows=strategies.histories_with_malformed(), data=st.data())
def test_folding_a_prefix_then_the_rest_equals_folding_everything(rows: list[ChangeRow], data: st.DataObject) -> None:
    """For any history (malformed rows included) and any split point k, seeding the fold of
    `rows[k:]` with the fold of `rows[:k]` gives the fold of `rows`, and the two halves report
    the same problems, in the same order, as the whole."""
    k = data.draw(st.integers(0, len(rows)), label="k")
    whole_problems: list[RowProblem] = []
    head_problems: list[RowProblem] = []
    tail_problems: list[RowProblem] = []
    whole = fold_rows("m1", rows, problems=whole_problems)
    head = fold_rows("m1", rows[:k], problems=head_problems)
    assert fold_rows("m1", rows[k:], seed=head, problems=tail_problems) == whole
    assert head_problems + tail_problems == whole_problems


@PROPERTY
@given(rows=strategies.histories_with_malformed(), data=st.data())
def test_refolding_from_the_stored_snapshot_json_equals_the_full_fold(rows: list[ChangeRow],
                                                                     data: st.DataObject) -> None:
    """What the DB refresh does: store the prefix's fold as JSON (`as_snapshot_record`, NULL when
    the state is empty), read it back with `from_snapshot_record`, fold the rest on top. The
    result equals the full fold, and so does its visibility for missions and for agents."""
    k = data.draw(st.integers(0, len(rows)), label="k")
    head = fold_rows("m1", rows[:k])
    stored = None if head.empty else json.loads(json.dumps(head.as_snapshot_record()))
    seed = FoldState() if stored is None else FoldState.from_snapshot_record(stored, head.tombstone)
    whole = fold_rows("m1", rows)
    refolded = fold_rows("m1", rows[k:], seed=seed)
    assert refolded == whole
    assert json.loads(json.dumps(refolded.as_snapshot_record())) == whole.as_snapshot_record()
    for agents in (False, True):
        assert is_live(refolded, honour_deleted_at=agents) == is_live(whole, honour_deleted_at=agents)


@PROPERTY
@given(rows=strategies.histories_with_malformed())
def test_folding_never_raises_and_reports_exactly_the_malformed_rows(rows: list[ChangeRow]) -> None:
    """Folding a malformed history never raises; the state is well-typed (string stamps, an
    `id`, no hidden key in the record); `problems` names each malformed row reached before a
    tombstone, in order, with one of the three kinds."""
    problems: list[RowProblem] = []
    state = fold_rows("m1", rows, problems=problems)
    assert [p.kind for p in problems] == classify(rows)
    assert {p.kind for p in problems} <= PROBLEM_KINDS
    assert all(p.record_id == "m1" for p in problems)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in state.stamps.items())
    if state.record is not None:
        assert "id" in state.record
        assert "__fieldTimestamps" not in state.record
    assert state.tombstone == any(r.op == "delete" for r in rows)
    for agents in (False, True):
        reference_fold("m1", rows, agents=agents)


@PROPERTY
@given(rows=strategies.histories(), agents=st.booleans())
def test_reference_fold_matches_a_literal_port_of_merge_raw(rows: list[ChangeRow], agents: bool) -> None:
    """On well-formed histories `reference_fold` is the TypeScript service's `mergeRaw`: delete
    terminal, the first row seeds record and stamps, string-compared LWW with the created_at
    fallback, agents dropped on a truthy `deletedAt`."""
    assert reference_fold("m1", rows, agents=agents) == merge_raw("m1", rows, agents=agents)


@PROPERTY
@given(rows=strategies.histories())
def test_stamps_only_grow(rows: list[ChangeRow]) -> None:
    """Past the first row, folding one more row never lowers a field's stamp nor drops a field
    (what lets a device and the server converge whatever order they see rows in)."""
    state = fold_rows("m1", rows[:1])
    for r in rows[1:]:
        nxt = fold_rows("m1", [r], seed=state)
        assert all(nxt.stamps.get(k, "") >= v for k, v in state.stamps.items())
        if state.record is not None and nxt.record is not None:
            assert set(state.record) <= set(nxt.record)
        state = nxt


# Not a law, deliberately untested: refolding a suffix on top of the full fold
# (`fold_rows(rows[k:], seed=fold_rows(rows))`) need not equal `fold_rows(rows)`, because an
# insert row carries no stamps and so wins against a seeded record again.
