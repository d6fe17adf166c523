"""nextRunAt is an instant: read alike by the database and by Python, and compared as one by the
due query and the due timer, whatever ISO-8601 form the device wrote it in."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest
from trio_asyncio import aio_as_trio

from seed import fetch, insert_rows, mission
from store.due import list_due_missions, next_wake
from store.instants import instant_of
from store.records import mission_field_problems
from store.refresh import refresh_stream
from store.sql import Q
from store.streams import MISSIONS

UTC = timezone.utc
NOW = datetime(2026, 12, 6, 12, 0, 0, 500_000, tzinfo=UTC)
NOW_ISO = "2026-12-06T12:00:00.500Z"


@pytest.mark.parametrize(("text", "instant"), [
    ("2026-12-06T12:00:00.000Z", datetime(2026, 12, 6, 12, tzinfo=UTC)),
    ("2026-12-06T12:00:00Z", datetime(2026, 12, 6, 12, tzinfo=UTC)),
    ("2026-12-06T12:00Z", datetime(2026, 12, 6, 12, tzinfo=UTC)),
    ("2026-12-06T14:00:00.000+02:00", datetime(2026, 12, 6, 12, tzinfo=UTC)),
    ("2026-12-06T07:00:00-05:00", datetime(2026, 12, 6, 12, tzinfo=UTC)),
    ("2026-12-06T17:30:00+0530", datetime(2026, 12, 6, 12, tzinfo=UTC)),
    ("2026-12-06T14:00:00+02", datetime(2026, 12, 6, 12, tzinfo=UTC)),
    ("2026-12-06T12:00:00", datetime(2026, 12, 6, 12, tzinfo=UTC)),  # no offset: UTC
    ("2026-12-06 12:00:00.25z", datetime(2026, 12, 6, 12, 0, 0, 250_000, tzinfo=UTC)),
    ("2026-12-06t12:00:00,123456789Z", datetime(2026, 12, 6, 12, 0, 0, 123_456, tzinfo=UTC)),
    ("2024-02-29T00:00:00Z", datetime(2024, 2, 29, tzinfo=UTC)),
    ("2026-12-07T01:00:00+13:00", datetime(2026, 12, 6, 12, tzinfo=UTC)),
    ("", None), ("tomorrow", None), ("0", None), ("2026-12-06", None), ("20261206T120000Z", None),
    ("2026-13-01T00:00:00Z", None), ("2026-02-29T00:00:00Z", None), ("2026-12-06T24:00:00Z", None),
    ("2026-12-06T23:59:60Z", None), ("2026-12-06T12:00:00+24:00", None), ("2026-12-06T12:00:00+16:00", None), ("2026-12-06T12:00:00 Z", None),
    ("2026-12-06T12:00:00.Z", None), ("2026-12-06T12:00:00Z\n", None), ("0000-01-01T00:00:00Z", None),
    ("0001-01-01T00:00:00+00:01", None), ("9999-12-31T23:59:59-00:01", None),
    ("２０２６-12-06T12:00:00Z", None),  # digits other than ASCII ones
    (5, None), (None, None), ({"at": "2026-12-06T12:00:00Z"}, None),
])
def test_instant_of_reads_the_accepted_iso_forms(text: object, instant: datetime | None) -> None:
    assert instant_of(text) == instant


def _corpus() -> list[str]:
    """Valid timestamps in every accepted form, and the same mutated a character at a time."""
    rng = random.Random(17)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    values = []
    for _ in range(400):
        at = base + timedelta(seconds=rng.randrange(-10**9, 10**9), microseconds=rng.randrange(10**6))
        stem = at.strftime("%Y-%m-%d") + rng.choice("Tt ") + at.strftime("%H:%M")
        stem += rng.choice(["", at.strftime(":%S"), at.strftime(":%S.%f")[:rng.randrange(4, 17)]])
        stem += rng.choice(["", "Z", "z", "+02:00", "-05:30", "+0100", "-11", "+15:59", "+23:59", "+24:00", "-00:60"])
        values.append(stem)
        chars = list(stem)
        chars[rng.randrange(len(chars))] = rng.choice("0123456789:-+.,TZ 9x")
        values.append("".join(chars))
        values.append(stem[:rng.randrange(len(stem))])
    values += ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "0001-01-01T00:00:00-00:01",
               "9999-12-31T23:59:59+00:01", "2000-02-29T12:00:00Z", "1900-02-29T12:00:00Z", "2026-04-31T00:00Z",
               "2026-12-06T12:00:00.9999999Z", "2026-12-06T12:00:00,5+01"]
    return values


async def _read_in(pool: asyncpg.Pool, values: list[str], timezone_name: str) -> dict[str, datetime | None]:
    async with pool.acquire() as conn:
        await conn.execute(f"SET TimeZone = '{timezone_name}'; SET DateStyle = 'SQL, DMY'")
        try:
            rows = await conn.fetch("SELECT v, mana_ai.instant_of(to_jsonb(v)) AS at FROM unnest($1::text[]) v",
                                    values)
        finally:
            await conn.execute("RESET TimeZone; RESET DateStyle")
    return {r["v"]: r["at"] for r in rows}


@pytest.mark.parametrize("timezone_name", ["UTC", "Pacific/Kiritimati", "America/Los_Angeles"])
async def test_database_and_python_read_every_value_alike(pool: asyncpg.Pool, timezone_name: str) -> None:
    values = _corpus()
    database = await aio_as_trio(_read_in)(pool, values, timezone_name)  # the session's zone changes nothing
    differ = {v: (database[v], instant_of(v)) for v in values if database[v] != instant_of(v)}
    assert differ == {}
    assert sum(1 for v in values if instant_of(v) is not None) > 400  # the corpus is not all rejects
    rows = await fetch(pool, "SELECT mana_ai.instant_of(v) AS at FROM unnest($1::text[]::jsonb[]) v",
                       ["5", "null", '{"a": 1}', "[]", "true"])
    assert [r["at"] for r in rows] == [None] * 5


async def test_due_query_and_next_wake_compare_instants_whatever_the_form(pool: asyncpg.Pool) -> None:
    forms = {
        "m-offset-past": "2026-12-06T13:57:00.000+02:00",  # 11:57Z; its text sorts after NOW_ISO
        "m-current-second": "2026-12-06T12:00:00Z",  # 12:00:00.000; its text sorts after NOW_ISO
        "m-whole-past": "2026-12-06T11:59:59Z",
        "m-no-offset": "2026-12-06T11:59:00",  # UTC
        "m-offset-future": "2026-12-06T02:10:00-10:00",  # 12:10Z; its text sorts before NOW_ISO
        "m-later": "2026-12-06T12:20:00.000Z",
        "m-unreadable": "0",  # sorts before any timestamp, names none
        "m-no-date": "2026-02-30T00:00:00Z",
    }
    await insert_rows(pool, *(mission(m, next_run_at=text, user=f"u-{m}") for m, text in forms.items()))
    await refresh_stream(pool, MISSIONS, lag_s=0)
    due = await list_due_missions(pool, NOW_ISO, 100)
    # the slot stays the text the device wrote
    assert {d.mission.id: d.mission.next_run_at for d in due} == {
        m: forms[m] for m in ("m-offset-past", "m-current-second", "m-whole-past", "m-no-offset")}
    assert [d.mission.id for d in due][:2] == ["m-offset-past", "m-no-offset"]  # oldest instant first
    wake = await next_wake(pool, NOW)
    assert wake.seconds == pytest.approx(9 * 60 + 59.5)  # m-offset-future at 12:10Z


async def _plans(pool: asyncpg.Pool) -> dict[str, str]:
    async with pool.acquire() as conn:
        await conn.execute("SET enable_seqscan = off")  # a test table is small: ask whether an index can serve
        try:
            return {name: "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + Q[name], *args))
                    for name, args in (("due_missions", (NOW, 10)), ("next_wake", (NOW,)))}
        finally:
            await conn.execute("RESET enable_seqscan")


async def test_the_due_query_and_next_wake_are_served_by_their_indexes(pool: asyncpg.Pool) -> None:
    plans = await aio_as_trio(_plans)(pool)
    assert "idx_mission_snapshots_open_due" in plans["due_missions"], plans["due_missions"]
    assert "idx_mission_snapshots_next_run" in plans["next_wake"], plans["next_wake"]


def test_a_value_that_names_no_instant_is_reported_once_as_a_bad_field() -> None:
    assert mission_field_problems({"nextRunAt": "next tuesday"}) == [
        "nextRunAt names no ISO-8601 instant (never due)"]
    assert mission_field_problems({"nextRunAt": "2026-12-06T14:00:00+02:00"}) == []
    assert mission_field_problems({"nextRunAt": ""}) == []  # an empty string reads as not set
