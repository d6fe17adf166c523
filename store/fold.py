"""Field-level last-write-wins fold of `sync_changes` rows (the TypeScript service's `mergeRaw`), pure.

The fold keeps going past what `mergeRaw` returns, so that folding a prefix and then
the rest seeded from that result is the same as folding everything at once:

* a delete row makes the state a *tombstone*, which is terminal (later rows are ignored);
* an agent's `deletedAt` is kept in the record, and `is_live` decides visibility, because
  a later update may clear it again exactly as a full replay would.

Rows must be given oldest first, ordered by `(created_at, id)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from planner.iteration import iso_ms

FIELD_TIMESTAMPS_KEY = "__fieldTimestamps"
KNOWN_OPS = frozenset({"insert", "update", "delete"})


@dataclass(frozen=True)
class ChangeRow:
    """One `sync_changes` row as the fold needs it; `data`/`field_timestamps` are raw JSON."""

    record_id: str
    op: str
    data: Any
    field_timestamps: Any
    created_at: datetime


@dataclass(frozen=True)
class FoldState:
    """The running state of one record: its fields, per-field stamps and tombstone flag."""

    record: Mapping[str, Any] | None = None
    stamps: Mapping[str, str] = field(default_factory=dict)
    tombstone: bool = False

    @property
    def empty(self) -> bool:
        return self.record is None and not self.tombstone

    def as_snapshot_record(self) -> dict[str, Any]:
        """The JSON stored in `mana_ai.*_snapshots.record` (the TypeScript service's shape)."""
        record = dict(self.record or {})
        record[FIELD_TIMESTAMPS_KEY] = dict(self.stamps)
        return record

    @classmethod
    def from_snapshot_record(cls, record: Mapping[str, Any], tombstone: bool) -> FoldState:
        stamps_raw = record.get(FIELD_TIMESTAMPS_KEY)
        stamps = _string_stamps(stamps_raw)
        fields = {k: v for k, v in record.items() if k != FIELD_TIMESTAMPS_KEY}
        return cls(record=fields, stamps=stamps, tombstone=tombstone)


@dataclass(frozen=True)
class RowProblem:
    """A row the fold coerced or skipped; the caller logs and counts it."""

    record_id: str
    kind: str  # data-not-object | unknown-op | bad-field-timestamps
    detail: str


def _string_stamps(raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, str)}


def fold_rows(
    record_id: str,
    rows: Iterable[ChangeRow],
    seed: FoldState | None = None,
    problems: list[RowProblem] | None = None,
) -> FoldState:
    """Replay `rows` (oldest first) on top of `seed`; last write wins per field.

    Bad rows never raise: an unknown op is skipped, non-object `data` is skipped, a
    non-object `field_timestamps` counts as `{}`. Each such row is reported in `problems`.
    """
    state = seed or FoldState()
    if state.tombstone:
        return state
    fields: dict[str, Any] | None = None if state.record is None else dict(state.record)
    stamps: dict[str, str] = dict(state.stamps)
    for row in rows:
        if row.op not in KNOWN_OPS:
            _report(problems, row, "unknown-op", f"op={row.op[:32]!r}")  # logged: keep it short
            continue
        if row.op == "delete":
            # Terminal. Keep the last fields (plus deletedAt) so the snapshot stays readable.
            kept = dict(fields or {"id": record_id})
            if isinstance(row.data, Mapping) and isinstance(row.data.get("deletedAt"), str):
                kept["deletedAt"] = row.data["deletedAt"]
            return FoldState(record=kept, stamps=stamps, tombstone=True)
        row_stamps: Mapping[str, Any]
        if row.field_timestamps is None or isinstance(row.field_timestamps, Mapping):
            row_stamps = row.field_timestamps or {}
        else:
            _report(problems, row, "bad-field-timestamps",
                    f"field_timestamps is {type(row.field_timestamps).__name__}")
            row_stamps = {}
        if row.data is not None and not isinstance(row.data, Mapping):
            _report(problems, row, "data-not-object", f"data is {type(row.data).__name__}")
            continue
        if fields is None:  # the first row seeds the record, stamps and all
            fields = {"id": record_id, **(row.data or {})}
            fields.pop(FIELD_TIMESTAMPS_KEY, None)
            stamps = _string_stamps(row_stamps)
            continue
        if row.data is None:
            continue
        fallback: str | None = None  # the row's own time, formatted only for a field without a stamp
        for key, value in row.data.items():
            if key == FIELD_TIMESTAMPS_KEY:
                continue
            stamp = row_stamps.get(key)
            if isinstance(stamp, str) and stamp:
                server_time = stamp
            else:
                server_time = fallback = fallback or iso_ms(row.created_at)
            if server_time >= stamps.get(key, ""):  # string compare; a tie goes to the later row
                fields[key] = value
                stamps[key] = server_time
    return FoldState(record=fields, stamps=stamps, tombstone=False)


def _report(problems: list[RowProblem] | None, row: ChangeRow, kind: str, detail: str) -> None:
    if problems is not None:
        problems.append(RowProblem(row.record_id, kind, detail))


def is_live(state: FoldState, *, honour_deleted_at: bool) -> bool:
    """Whether `mergeRaw` would return this record (agents also drop on `deletedAt`)."""
    if state.record is None or state.tombstone:
        return False
    return not (honour_deleted_at and state.record.get("deletedAt"))


def reference_fold(record_id: str, rows: Iterable[ChangeRow], *, agents: bool) -> dict[str, Any] | None:
    """Exactly the TypeScript service's `mergeRaw` result: the record with `__fieldTimestamps`, or None."""
    state = fold_rows(record_id, rows)
    if not is_live(state, honour_deleted_at=agents):
        return None
    return state.as_snapshot_record()
