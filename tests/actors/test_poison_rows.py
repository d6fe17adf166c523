"""Poison rows: one row that cannot be decoded or stored is skipped, recorded and
counted once, and every other mission is still planned in the same cycle.

Each case reproduces one of the rows that used to stop every cycle for every user.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from fake_llm import plan_reply, running_fake_llm
from observability.metrics import ROW_REJECT_REASONS, Metrics
from planning import CREATE_TASK, agent_row, planning_runtime, written_rows
from seed import fetch, insert_rows, mission
from store.refresh import refresh_stream
from store.streams import AGENTS, MISSIONS

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)
SLOT = "2026-04-15T09:00:00.000Z"


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"service": "mana-ai", **labels}) or 0.0


async def insert_raw(pool: asyncpg.Pool, table: str, record_id: str, data: str, *, user: str = "u-1",
                     op: str = "insert", created_at: datetime = PAST) -> tuple[uuid.UUID, datetime]:
    """A row whose `data` is JSON text exactly as given (Python could not even encode some)."""
    [row] = await fetch(pool, """
        INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_timestamps, client_id,
                                  created_at)
        VALUES ('ai', $1, $2, $3, $4, $5::text::jsonb, '{}', 'device-1', $6) RETURNING id, created_at""",
        table, record_id, user, op, data, created_at)
    return row["id"], row["created_at"]


def mission_text(mission_id: str, **raw_fields: str) -> str:
    """A mission as the webapp creates it (`tests.seed.mission`) as JSON text, some fields raw JSON."""
    data = mission(mission_id, agent_id=None)["data"]
    body = json.dumps(data)[:-1]
    return body + "".join(f", {json.dumps(k)}: {v}" for k, v in raw_fields.items()) + "}"


@dataclass(frozen=True)
class Poison:
    table: str
    record_id: str
    data: str
    reason: str
    user: str = "u-1"
    op: str = "insert"
    settings: dict[str, Any] = field(default_factory=dict)


DEEP = "[" * 990 + "]" * 990
CASES = {
    # a new mission, and an update of a mission that is planned in the same cycle
    "deep-nesting": Poison("aiMissions", "m-poison", mission_text("m-poison", notes=DEEP), "too-deep"),
    "deep-update": Poison("aiMissions", "m1", '{"title": ' + DEEP + "}", "too-deep", op="update"),
    "number-1e5000": Poison("aiMissions", "m1", '{"title": 1e5000}', "number-out-of-range", op="update"),
    "integer-5000-digits": Poison("aiMissions", "m-poison", mission_text("m-poison", score="9" * 5000),
                                  "number-out-of-range"),
    "agent-limit-1e400": Poison("agents", "a-poison", json.dumps(agent_row("a-poison")["data"])[:-1]
                                + ', "maxConcurrentMissions": 1e400}', "number-out-of-range"),
    "agent-budget-1e400": Poison("agents", "a-poison", '{"id": "a-poison", "name": "B", "maxTokensPerDay": 1e400}',
                                 "number-out-of-range"),
    "long-next-run-at": Poison("aiMissions", "m-poison",
                               mission_text("m-poison", nextRunAt=json.dumps(SLOT + "9" * 3000)), "slot-too-long"),
    "long-ids": Poison("aiMissions", "m" * 1500, mission_text("m-poison"), "id-too-long", user="u" * 1500),
    "long-string": Poison("aiMissions", "m-poison", mission_text("m-poison", conceptMarkdown=json.dumps("x" * 70_000)),
                          "string-too-long"),
    "large-row": Poison("aiMissions", "m-poison", mission_text("m-poison", inputs=json.dumps(["x" * 1000] * 100)),
                        "row-too-large", settings={"max_row_bytes": 65_536}),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_a_poison_row_is_rejected_once_and_every_valid_mission_is_planned(
        pool: asyncpg.Pool, case: Poison, caplog: pytest.LogCaptureFixture) -> None:
    await insert_rows(pool, {**mission("m1", agent_id=None), "created_at": PAST},
                      {**mission("m2", agent_id="a-poison"), "created_at": PAST},  # runs as legacy: no agent
                      {**mission("m3", user="u-2", agent_id=None), "created_at": PAST})
    poison_id, poison_at = await insert_raw(pool, case.table, case.record_id, case.data, user=case.user, op=case.op,
                                            created_at=PAST + timedelta(seconds=1))
    metrics = Metrics()
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, metrics, **case.settings) as runtime:
            with caplog.at_level(logging.WARNING):
                stats = await runtime.snapshots.run_cycle()
            assert stats.errors == []
            assert (stats.due_mission_count, stats.plans_written_back) == (3, 3)
            again = await runtime.snapshots.run_cycle()  # reads the write-backs; the poison row is behind it
            assert (again.errors, again.due_mission_count) == ([], 0)
    # every valid mission planned once: one write-back row and one planned slot each
    assert sorted((r["user_id"], r["record_id"]) for r in await written_rows(pool)) == [
        ("u-1", "m1"), ("u-1", "m2"), ("u-2", "m3")]
    runs = await fetch(pool, "SELECT mission_id, status FROM mana_ai.mission_runs ORDER BY mission_id")
    assert [(r["mission_id"], r["status"]) for r in runs] == [("m1", "planned"), ("m2", "planned"),
                                                              ("m3", "planned")]
    # rejected once: the metric, one log line without content, one inspection row
    assert {reason: sample(metrics, "mana_ai_rows_rejected_total", reason=reason)
            for reason in ROW_REJECT_REASONS if sample(metrics, "mana_ai_rows_rejected_total", reason=reason)} == {
        case.reason: 1}
    [line] = [r for r in caplog.records if r.getMessage() == "sync_row.rejected"]
    assert (line.reason, line.change_id, line.table) == (case.reason, str(poison_id), case.table)  # type: ignore[attr-defined]
    assert len(line.user) <= 65 and len(line.record) <= 65  # type: ignore[attr-defined]
    assert "xxxx" not in line.detail and "9999" not in line.detail and "[[" not in line.detail  # type: ignore[attr-defined]
    [rejected] = await fetch(pool, "SELECT * FROM mana_ai.rejected_rows")
    assert (rejected["change_id"], rejected["reason"], rejected["table_name"]) == (poison_id, case.reason, case.table)
    assert rejected["changed_at"] == poison_at and len(rejected["user_id"]) <= 257 and rejected["row_bytes"] > 0
    # the cursor moved past it: nothing is read again
    [cursor] = await fetch(pool, "SELECT stable_until, stable_id FROM mana_ai.refresh_cursors WHERE stream = $1",
                           case.table)
    assert (cursor["stable_until"], str(cursor["stable_id"])) >= (poison_at, str(poison_id))
    for stream in (MISSIONS, AGENTS):
        assert (await refresh_stream(pool, stream, lag_s=0)).rows_read == 0


async def test_an_agent_snapshot_no_double_holds_is_read_without_failing_the_dispatch(pool: asyncpg.Pool) -> None:
    """A snapshot stored before the bounds existed (1e400 read back as a 401-digit integer) made
    `Agent.from_record` raise after the claims; now it reads as JavaScript would, and runs."""
    huge = "1" + "0" * 400
    await insert_rows(pool, {**mission("m1", agent_id="a1"), "created_at": PAST},
                      {**agent_row("a1"), "created_at": PAST})
    metrics = Metrics()
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, metrics) as runtime:
            await runtime.snapshots.run_cycle()  # the snapshots exist now; move the slot on
            await fetch(pool, f"""UPDATE mana_ai.agent_snapshots SET record = record
                                  || '{{"maxConcurrentMissions": {huge}, "maxTokensPerDay": {huge}}}'::jsonb""")
            await insert_rows(pool, mission("m2", agent_id="a1"))  # created now, after the cursor
            stats = await runtime.snapshots.run_cycle()
    assert (stats.errors, stats.due_mission_count, stats.plans_written_back) == ([], 1, 1)
    runs = await fetch(pool, "SELECT mission_id, status FROM mana_ai.mission_runs ORDER BY mission_id")
    assert [(r["mission_id"], r["status"]) for r in runs] == [("m1", "planned"), ("m2", "planned")]
    assert [r["actor"]["principalId"] for r in await written_rows(pool, "m2")] == ["a1"]  # as the agent, unlimited


def test_a_crashed_cycle_names_the_leaf_exceptions_not_the_group() -> None:
    """`ExceptionGroup: Exceptions from Trio nursery (1 sub-exception)` told an operator nothing."""
    from actors.snapshot import _describe_crash

    nested = ExceptionGroup("Exceptions from Trio nursery", [
        ExceptionGroup("Exceptions from Trio nursery", [RecursionError("maximum recursion depth exceeded")])])
    assert _describe_crash(nested) == "RecursionError: maximum recursion depth exceeded"
    two = ExceptionGroup("Exceptions from Trio nursery", [ValueError("bad"), KeyError("k")])
    assert _describe_crash(two) == "ValueError: bad; KeyError: 'k'"
    assert _describe_crash(OverflowError("int too large to convert to float")) == (
        "OverflowError: int too large to convert to float")
    assert _describe_crash(AssertionError()) == "AssertionError"
