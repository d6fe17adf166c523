"""Hypothesis strategies shared by the property tests.

The histories model one record's `sync_changes` rows the way mana-sync stores them
(as the webapp pushes them): inserts carry the whole record and no stamps, updates carry
the modified keys stamped with the device's `toISOString()`, deletes carry `{"deletedAt": T}`.
Stamps come from a small set so that ties happen, and `created_at` starts close to them so the
`iso_ms(created_at)` fallback ties and interleaves with explicit stamps too.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from store.fold import ChangeRow

#: The keys a generated record uses (a slice of the mission/agent shape).
KEYS = ("title", "state", "nextRunAt", "iterations", "updatedAt", "deletedAt")

#: ISO-ms stamps (`YYYY-MM-DDTHH:MM:SS.mmmZ`); few of them, so equal stamps are common.
#: The first sorts before every generated `created_at`, the others inside the generated range.
STAMPS = (
    "2026-04-14T23:59:59.999Z",
    "2026-04-15T08:00:00.000Z",
    "2026-04-15T08:00:00.001Z",
    "2026-04-15T09:00:00.000Z",
    "2026-04-15T10:00:00.500Z",
)

#: The first generated `created_at`: inside STAMPS' range and with µs, so the ms truncation of
#: the fallback stamp matters (08:00:00.000400 → "…08:00:00.000Z", a tie with STAMPS[1]).
BASE_CREATED_AT = datetime(2026, 4, 15, 8, 0, 0, 400, tzinfo=timezone.utc)

#: Gaps between consecutive rows, in µs: equal timestamps, sub-ms, ms and larger steps.
_GAPS_US = (0, 0, 1, 599, 600, 1_000, 250_000, 60_000_000, 3_600_000_000)


def iso_stamps() -> st.SearchStrategy[str]:
    """One of the few ISO-ms stamps in STAMPS."""
    return st.sampled_from(STAMPS)


def _iterations() -> st.SearchStrategy[list[dict[str, Any]]]:
    iteration = st.fixed_dictionaries({
        "id": st.sampled_from(["it-1", "it-2", "it-3"]),
        "overallStatus": st.sampled_from(["running", "awaiting-review", "approved"]),
        "plan": st.just([]),
    }, optional={"source": st.just("server")})
    return st.lists(iteration, max_size=3)


#: The value strategy for each key of KEYS (JSON values, as `data` holds them).
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "title": st.sampled_from(["Wochenreview", "Renamed", "", "x"]),
    "state": st.sampled_from(["active", "paused", "done", "archived"]),
    "nextRunAt": st.one_of(st.none(), iso_stamps()),
    "iterations": _iterations(),
    "updatedAt": iso_stamps(),
    "deletedAt": st.one_of(st.none(), iso_stamps()),
}


def field_data(min_size: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """A `data` object over KEYS (any subset, at least `min_size` keys), JSON values only."""
    return st.fixed_dictionaries({}, optional=FIELD_VALUES).filter(lambda d: len(d) >= min_size)


@st.composite
def _stamps_for(draw: st.DrawFn, data: dict[str, Any] | None) -> dict[str, str] | None:
    """Stamps for an update's keys: one T for all (the webapp), one per key, some, none, NULL."""
    keys = list(data or {})
    mode = draw(st.sampled_from(["same", "same", "same", "per-key", "partial", "empty", "null"]))
    if mode == "same":
        stamp = draw(iso_stamps())
        return {k: stamp for k in keys}
    if mode == "per-key":
        return {k: draw(iso_stamps()) for k in keys}
    if mode == "partial":
        return {k: draw(iso_stamps()) for k in keys if draw(st.booleans())}
    return {} if mode == "empty" else None


@st.composite
def row_payloads(draw: st.DrawFn, record_id: str = "m1") -> tuple[str, Any, Any]:
    """A well-formed `(op, data, field_timestamps)`: insert 2, update 6, delete 1 (by weight).

    Inserts carry a record (sometimes with its `id`) and `{}` stamps; updates carry at least
    one key (rarely `data: null`) and stamps as in `_stamps_for`; deletes carry
    `{"deletedAt": T}` or `{}` and `{}` stamps.
    """
    op = draw(st.sampled_from(["insert"] * 2 + ["update"] * 6 + ["delete"]))
    if op == "insert":
        data = draw(field_data())
        if draw(st.booleans()):
            data = {"id": record_id, **data}
        return op, data, {}
    if op == "update":
        if draw(st.integers(0, 19)) == 0:
            return op, None, draw(st.sampled_from([{}, None]))
        data = draw(field_data(min_size=1))
        return op, data, draw(_stamps_for(data))
    data = draw(st.one_of(st.builds(lambda t: {"deletedAt": t}, iso_stamps()), st.just({})))
    return op, data, {}


@st.composite
def malformed_payloads(draw: st.DrawFn) -> tuple[str, Any, Any]:
    """A row a buggy or hostile device could leave behind: `(op, data, field_timestamps)`.

    One of: unknown op `upsert`; `data` a list, string or number; `field_timestamps` a list;
    stamp values that are not strings (number, null, bool, "", an object); `data` carrying the
    hidden `__fieldTimestamps` key; a delete whose `data` is not an object.
    """
    kind = draw(st.sampled_from([
        "unknown-op", "data-list", "data-string", "data-number", "ft-list",
        "stamp-not-string", "hidden-key", "delete-bad-data",
    ]))
    data = draw(field_data(min_size=1))
    if kind == "unknown-op":
        return "upsert", data, {k: draw(iso_stamps()) for k in data}
    if kind == "data-list":
        return draw(st.sampled_from(["insert", "update"])), [data, 1], {}
    if kind == "data-string":
        return draw(st.sampled_from(["insert", "update"])), "paused", {"state": draw(iso_stamps())}
    if kind == "data-number":
        number = draw(st.one_of(st.integers(-5, 5), st.sampled_from([0.5, 1e21])))
        return draw(st.sampled_from(["insert", "update"])), number, {}
    if kind == "ft-list":
        return draw(st.sampled_from(["insert", "update"])), data, [draw(iso_stamps())]
    if kind == "stamp-not-string":
        bad = st.sampled_from([12345, None, True, "", {"at": STAMPS[1]}])
        return draw(st.sampled_from(["insert", "update"])), data, {k: draw(bad) for k in data}
    if kind == "hidden-key":
        hidden = {k: draw(iso_stamps()) for k in data}
        return "update", {**data, "__fieldTimestamps": hidden}, {k: draw(iso_stamps()) for k in data}
    return "delete", draw(st.sampled_from([["x"], "gone", 7])), draw(st.sampled_from([{}, ["x"]]))


@st.composite
def created_ats(draw: st.DrawFn, n: int) -> list[datetime]:
    """`n` aware UTC datetimes, non-decreasing (equal neighbours allowed), with µs."""
    at = BASE_CREATED_AT + timedelta(microseconds=draw(st.sampled_from(_GAPS_US)))
    out = []
    for _ in range(n):
        out.append(at)
        at += timedelta(microseconds=draw(st.sampled_from(_GAPS_US)))
    return out


@st.composite
def histories(draw: st.DrawFn, record_id: str = "m1", max_size: int = 10) -> list[ChangeRow]:
    """A realistic history of one record, oldest first, every row well-formed.

    Any op may come first (a history may start with an update or a delete), and rows after
    a delete are generated too, so terminal tombstones get exercised.
    """
    payloads = draw(st.lists(row_payloads(record_id), max_size=max_size))
    times = draw(created_ats(len(payloads)))
    return [ChangeRow(record_id, op, data, ft, at) for (op, data, ft), at in zip(payloads, times)]


@st.composite
def histories_with_malformed(draw: st.DrawFn, record_id: str = "m1", max_size: int = 10) -> list[ChangeRow]:
    """Like `histories`, but about one row in four is drawn from `malformed_payloads`."""
    payload = st.one_of(row_payloads(record_id), row_payloads(record_id), row_payloads(record_id),
                        malformed_payloads())
    payloads = draw(st.lists(payload, max_size=max_size))
    times = draw(created_ats(len(payloads)))
    return [ChangeRow(record_id, op, data, ft, at) for (op, data, ft), at in zip(payloads, times)]


def json_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Any JSON value (no NaN/∞, which JSON cannot carry), nested a little."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
        max_leaves=max_leaves)


def json_records(keys: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """A snapshot record whose listed `keys` hold arbitrary JSON values (any subset present)."""
    return st.fixed_dictionaries({}, optional={k: json_values() for k in keys})


# --- poison rows: JSON a device could send that the decoder must bound (store/bounds.py) --------

#: Characters from every Unicode category but surrogates and NUL (Postgres `jsonb` stores neither).
PG_TEXT = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")


def _long_strings(alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """One character repeated up to 70,000 times: past the default string bound cheaply."""
    return st.builds(lambda c, n: c * n, alphabet, st.integers(0, 70_000))


def wild_json_values(alphabet: st.SearchStrategy[str] = PG_TEXT) -> st.SearchStrategy[Any]:
    """JSON values with odd text, long strings, doubles of any size and integers past a double."""
    leaves = st.one_of(
        st.none(), st.booleans(),
        st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(alphabet, max_size=12), _long_strings(alphabet),
    )
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(alphabet, max_size=8), inner, max_size=4), max_leaves=10)


def _nest(depth: int, core: str) -> str:
    return "[" * depth + core + "]" * depth


def poison_texts() -> st.SearchStrategy[str]:
    """JSON texts past a bound the way Postgres renders them: deep nesting, huge numbers."""
    return st.one_of(
        # at least one level: `_nest(0, "")` is no JSON at all (`{"id": }`), which no jsonb column holds
        st.builds(_nest, st.one_of(st.integers(1, 80), st.integers(1, 1_200)), st.sampled_from(["", "1", '"x"', "{}"])),
        st.builds(lambda k: "1" + "0" * k, st.integers(300, 5_000)),  # jsonb prints 1e5000 so
        st.builds(lambda k: "-0." + "0" * k + "1", st.integers(300, 400)),  # tiny: underflows to -0.0
        st.sampled_from(["1e400", "-1e400", "1e308", "1.7976931348623157e308"]),
    )


@st.composite
def object_texts(draw: st.DrawFn, alphabet: st.SearchStrategy[str] = PG_TEXT) -> str:
    """A JSON object as text, mission- or agent-shaped keys mixed with arbitrary ones, whose
    values are JSON values (`wild_json_values`) or raw poison texts."""
    keys = st.one_of(st.sampled_from(["id", "title", "state", "nextRunAt", "agentId", "iterations",
                                      "maxConcurrentMissions", "maxTokensPerDay", "name", "policy"]),
                     st.text(alphabet, max_size=8))
    value = wild_json_values(alphabet).map(_json_text)
    fields = draw(st.dictionaries(keys, st.one_of(value, value, value, poison_texts()), max_size=5))
    if draw(st.booleans()):
        fields["state"] = '"active"'
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}"


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
