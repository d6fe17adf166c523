"""What one `sync_changes` row must respect to be folded and stored, and the bounded JSON decoder (pure).

A device can put anything into `data`: JSON nested a thousand levels deep, numbers no double
holds, huge strings, ids longer than an index row. Each of these used to fail a whole page
(the decoder raised) or a whole upsert (an index row too large), so one row stopped every cycle
for every user. Here each row is judged on its own: `check_row` gives the `ChangeRow` to fold,
or a `Rejected` with a reason and sizes — never the row's content — and the refresh skips it.
The bounds and the value rules are those of `planner/storable.py`, which the planner and the
write-back apply to every plan before it is written: the daemon never writes a row it rejects.

Reasons (the label of `mana_ai_rows_rejected_total`):

* `row-too-large`        `data` + `field_timestamps` as text exceed `max_row_bytes`
* `too-deep`             arrays/objects nested deeper than `max_json_depth`
* `string-too-long`      a string or key longer than `max_string_bytes` (UTF-8)
* `number-out-of-range`  a number no finite double holds (`1e400`, a 5,000-digit integer)
* `bad-unicode`          a NUL or a lone surrogate (Postgres `jsonb` cannot store either)
* `invalid-json`         text that is not JSON (Postgres never hands us such text)
* `id-too-long`          `user_id`, `record_id`, `data.id` or a mission's `agentId` longer than
                         `max_id_chars` (they are keys of btree indexes)
* `slot-too-long`        a mission's `nextRunAt` whose text exceeds `MAX_SLOT_BYTES` (indexed,
                         and the run ledger's key)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate
from typing import Any

from planner._js import js_string
from planner.storable import (BAD_UNICODE, MAX_DOUBLE_DIGITS, NUMBER_OUT_OF_RANGE, ROW_TOO_LARGE, STRING_TOO_LONG,
                              TOO_DEEP, Rejected, RowBounds, number_problem, row_size_problem, string_problem)
from store.fold import ChangeRow

__all__ = ["BAD_UNICODE", "ID_TOO_LONG", "INVALID_JSON", "MAX_SLOT_BYTES", "NUMBER_OUT_OF_RANGE", "REASONS",
           "ROW_TOO_LARGE", "SLOT_TOO_LONG", "STRING_TOO_LONG", "TOO_DEEP", "RawRow", "Rejected", "RowBounds",
           "check_row", "decode_json", "pg_text_bytes"]

INVALID_JSON = "invalid-json"
ID_TOO_LONG = "id-too-long"
SLOT_TOO_LONG = "slot-too-long"
REASONS = (ROW_TOO_LARGE, TOO_DEEP, STRING_TOO_LONG, NUMBER_OUT_OF_RANGE, BAD_UNICODE, INVALID_JSON,
           ID_TOO_LONG, SLOT_TOO_LONG)

#: Bytes of a mission's `nextRunAt` as Postgres indexes it (`record->>'nextRunAt'`). It is a key
#: of `idx_mission_snapshots_due` and, with both ids, of
#: `mission_runs`: 2 ids × 256 characters (MANA_AI_MAX_ID_CHARS is capped there) × 4 bytes + 256
#: stays under btree's 2704-byte row limit. An ISO timestamp has 24.
MAX_SLOT_BYTES = 256

# Brackets are counted outside strings only: once the escape pairs `\\` and `\"` are gone,
# every `"` delimits a string, so the even pieces of a split on `"` are the text between them.
# Up to the first error in a text this agrees with the parser, so it never counts less than
# the depth the parser would reach. Done on UTF-8 bytes, where C-speed `translate` keeps only
# brackets and quotes (multi-byte characters never contain those bytes).
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"')
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
# escapes that decode to what jsonb cannot store: NUL, and (maybe lone) surrogates
_RISKY_ESCAPE = re.compile(r"\\u(?:0000|[dD][89abcdefABCDEF])")


class _Reject(Exception):
    """Raised from inside the decoder's hooks to stop decoding; becomes a `Rejected`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.rejected = Rejected(reason, detail)


def decode_json(text: str | None, bounds: RowBounds) -> Any:
    """The JSON value of `text` (None for SQL NULL), or a `Rejected`; never raises.

    Nesting is measured by a flat scan before parsing, so the parser never recurses deeper
    than `max_json_depth`; numbers are converted by hooks that refuse what no finite double
    holds (Python's own int conversion would raise past 4,300 digits).
    """
    if text is None:
        return None
    if text == "{}":  # most `field_timestamps` of inserts: nothing to scan or check
        return {}
    if _too_deep(text, bounds.max_json_depth):
        return Rejected(TOO_DEEP, f"nesting deeper than {bounds.max_json_depth}")
    try:
        value = _DECODER.decode(text)
    except _Reject as exc:
        return exc.rejected
    except RecursionError:  # the scan above makes this unreachable; kept as the last word
        return Rejected(TOO_DEEP, f"nesting deeper than {bounds.max_json_depth}")
    except ValueError as exc:  # json.JSONDecodeError
        return Rejected(INVALID_JSON, f"not JSON ({type(exc).__name__}) in {len(text)} chars")
    problem = _string_problem(text, value, bounds.max_string_bytes)
    return value if problem is None else problem


def _too_deep(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than `limit` (C-speed scans; no recursion)."""
    if text.count("[") + text.count("{") <= limit:  # the common case: cannot be deeper
        return False
    raw = text.encode("utf-8", "surrogatepass").replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = raw.translate(None, _NOT_STRUCTURE)
    brackets = b"".join(structure.split(b'"')[::2])
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > limit


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_DOUBLE_DIGITS:  # before int(): it raises past 4,300 digits
        raise _Reject(NUMBER_OUT_OF_RANGE, f"an integer of {len(digits)} digits")
    value = int(digits)
    if number_problem(value) is not None:
        raise _Reject(NUMBER_OUT_OF_RANGE, f"an integer of {len(digits)} digits")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if number_problem(value) is not None:
        raise _Reject(NUMBER_OUT_OF_RANGE, f"a number of {len(text)} chars beyond a double")
    return value


def _parse_constant(name: str) -> float:
    raise _Reject(NUMBER_OUT_OF_RANGE, f"the constant {name}")


# Built once: `json.loads` with hooks builds a new decoder (and scanner) on every call.
# It holds no state between calls (only the hooks above), so one instance serves all rows.
_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)


def _string_problem(text: str, value: Any, max_bytes: int) -> Rejected | None:
    """The first string or key that is too long or cannot be stored, walked without recursion.

    Decoded strings are never longer in UTF-8 than the text they came from, and only escapes
    (or raw surrogates, which do not encode) produce NUL or surrogates: a text that is short
    enough and clean needs no walk, and in a long one only strings long enough to matter are
    encoded."""
    try:
        size = len(text.encode("utf-8"))
        clean = _RISKY_ESCAPE.search(text) is None
    except UnicodeEncodeError:
        size, clean = len(text) * 4, False
    if clean and size <= max_bytes:
        return None
    shortest = max_bytes // 4 + 1 if clean else 0  # shorter strings are within the bound and clean
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if len(item) >= shortest and (problem := string_problem(item, max_bytes)) is not None:
                return problem
        elif isinstance(item, dict):
            for key, child in item.items():
                if len(key) >= shortest and (problem := string_problem(key, max_bytes)) is not None:
                    return problem
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
    return None


@dataclass(frozen=True)
class RawRow:
    """A `sync_changes` row as read for the refresh: `data`/`field_timestamps` still text.

    `row_bytes` is their size in Postgres; the texts are None when it exceeds the bound
    (Postgres does not send them)."""

    user_id: str
    record_id: str
    op: str
    data: str | None
    field_timestamps: str | None
    row_bytes: int
    created_at: datetime
    stamps_column: str = "field_timestamps"  # what the table calls them (field_meta after mana-sync's overhaul)


def check_row(row: RawRow, bounds: RowBounds, *, missions: bool) -> ChangeRow | Rejected:
    """The row to fold, or why it must be skipped (pure, never raises)."""
    for name, value in (("user_id", row.user_id), ("record_id", row.record_id)):
        if len(value) > bounds.max_id_chars:
            return Rejected(ID_TOO_LONG, f"{name} of {len(value)} chars > {bounds.max_id_chars}")
    too_large = row_size_problem(row.row_bytes, bounds)
    if too_large is not None:
        return too_large
    data = decode_json(row.data, bounds)
    if isinstance(data, Rejected):
        return Rejected(data.reason, f"data: {data.detail}")
    stamps = decode_json(row.field_timestamps, bounds)
    if isinstance(stamps, Rejected):
        return Rejected(stamps.reason, f"{row.stamps_column}: {stamps.detail}")
    if isinstance(data, Mapping):
        problem = _field_problem(data, bounds, missions=missions)
        if problem is not None:
            return problem
    return ChangeRow(row.record_id, row.op, data, stamps, row.created_at)


def _field_problem(data: Mapping[str, Any], bounds: RowBounds, *, missions: bool) -> Rejected | None:
    ids = [("id", js_string(data["id"]))] if "id" in data else []  # String(record.id) is the mission's key
    if missions and isinstance(data.get("agentId"), str):
        ids.append(("agentId", data["agentId"]))
    for name, value in ids:
        if len(value) > bounds.max_id_chars:
            return Rejected(ID_TOO_LONG, f"data.{name} of {len(value)} chars > {bounds.max_id_chars}")
    if missions and data.get("nextRunAt") is not None:
        size = pg_text_bytes(data["nextRunAt"])
        if size > MAX_SLOT_BYTES:
            return Rejected(SLOT_TOO_LONG, f"data.nextRunAt of {size} bytes > {MAX_SLOT_BYTES}")
    return None


def pg_text_bytes(value: Any) -> int:
    """An upper bound of `jsonb ->> key` for `value` in bytes: the string itself, or the text
    Postgres renders (numbers in full positional notation, strings escaped, ", " and ": ")."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += 6 * len(item.encode("utf-8", "surrogatepass")) + 2  # \uXXXX at worst, quotes
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += len(str(item))
        elif isinstance(item, float):
            # positional notation: up to 17 significant digits, padded with zeros to the exponent
            exponent = 0 if item == 0 or not math.isfinite(item) else int(math.floor(math.log10(abs(item))))
            total += abs(exponent) + 21
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            for key, child in item.items():
                stack.extend((key, child))
        elif isinstance(item, list):
            total += 2 + 2 * len(item)
            stack.extend(item)
    return total
