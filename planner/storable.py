"""What a JSON value must respect to be stored in a `sync_changes` row and read back (pure).

One definition for both sides: the refresh judges every row it reads with these rules
(store/bounds.py `check_row`), and the planner's parser, the tool-call validator and the
write-back judge every plan with the same ones before it is written, so the daemon never writes
a row its own refresh would reject.

Reasons (the label of `mana_ai_rows_rejected_total` and `mana_ai_write_backs_refused_total`):

* `row-too-large`        `data` + stamps as text exceed `max_row_bytes`
* `too-deep`             arrays/objects nested deeper than `max_json_depth`
* `string-too-long`      a string or key longer than `max_string_bytes` (UTF-8)
* `number-out-of-range`  a number no finite double holds (`1e400`, a 400-digit integer)
* `bad-unicode`          a NUL or a lone surrogate (Postgres `jsonb` cannot store either)

The planner imports this module and the store imports it too; it imports nothing of either.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any

ROW_TOO_LARGE = "row-too-large"
TOO_DEEP = "too-deep"
STRING_TOO_LONG = "string-too-long"
NUMBER_OUT_OF_RANGE = "number-out-of-range"
BAD_UNICODE = "bad-unicode"

#: Digits of the largest finite double (1.797…e308): an integer with more never fits one.
MAX_DOUBLE_DIGITS = 309

#: Where a write-back's pieces sit in its row `{"iterations": [iteration, …], …}`: the
#: iteration under the object and the array (2 levels), a step's params under the iteration,
#: its `plan` array, the step and its `intent` (2 + 4 levels).
ITERATION_DEPTH = 2
PARAMS_DEPTH = ITERATION_DEPTH + 4


# what JSON escapes in a string (as Postgres prints jsonb): quote, backslash, control characters
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')


@dataclass(frozen=True)
class RowBounds:
    """Limits a row must respect (settings `MANA_AI_MAX_*`, docs/configuration.md)."""

    max_json_depth: int = 64
    max_string_bytes: int = 65_536
    max_id_chars: int = 256
    max_row_bytes: int = 8_388_608


@dataclass(frozen=True)
class Rejected:
    """Why a value or row cannot be stored or folded; `detail` names sizes and limits, never content."""

    reason: str
    detail: str


def string_problem(text: str, max_bytes: int) -> Rejected | None:
    """Why `text` (a string or a key) cannot be stored, or None."""
    size = _utf8_size(text, max_bytes)
    return size if isinstance(size, Rejected) else None


def _utf8_size(text: str, max_bytes: int) -> int | Rejected:
    if len(text) > max_bytes:  # at least one byte per character: too long before encoding
        return Rejected(STRING_TOO_LONG, f"a string of {len(text)} chars > {max_bytes} bytes")
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            return Rejected(BAD_UNICODE, "a lone surrogate in a string")
    if size > max_bytes:
        return Rejected(STRING_TOO_LONG, f"a string of {size} bytes > {max_bytes}")
    if "\x00" in text:
        return Rejected(BAD_UNICODE, "a NUL character in a string")
    return size


def number_problem(value: int | float) -> Rejected | None:
    """Why a number cannot be read back as a finite double, or None."""
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return Rejected(NUMBER_OUT_OF_RANGE, "a number beyond a double")
    try:
        float(value)
    except OverflowError:
        return Rejected(NUMBER_OUT_OF_RANGE, f"an integer of {len(str(abs(value)))} digits")
    return None


def depth_problem(depth: int, bounds: RowBounds) -> Rejected | None:
    if depth > bounds.max_json_depth:
        return Rejected(TOO_DEEP, f"nesting deeper than {bounds.max_json_depth}")
    return None


def row_size_problem(row_bytes: int, bounds: RowBounds) -> Rejected | None:
    """Why a row of `row_bytes` (`data` + stamps as Postgres prints them) is too large, or None."""
    if row_bytes > bounds.max_row_bytes:
        return Rejected(ROW_TOO_LARGE, f"{row_bytes} bytes > {bounds.max_row_bytes}")
    return None


def stored_size(value: Any, bounds: RowBounds, *, depth: int = 0) -> int | Rejected:
    """The bytes of `value` as Postgres prints it from `jsonb` (`octet_length(value::text)`), or
    why it cannot be stored or read back within `bounds` when it sits `depth` levels deep in its
    row (pure; one walk, no recursion).

    Postgres prints `", "` and `": "` between items, escapes strings as `json.dumps` does with
    `ensure_ascii=False`, and numbers as `numeric` prints them: in full positional notation.
    """
    total = 0
    stack: list[tuple[Any, int]] = [(value, depth)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, str):
            size = _string_size(item, bounds.max_string_bytes)
            if isinstance(size, Rejected):
                return size
            total += size
        elif item is None or item is True:
            total += 4
        elif item is False:
            total += 5
        elif isinstance(item, int | float):
            problem = number_problem(item)
            if problem is not None:
                return problem
            total += len(str(item)) if isinstance(item, int) else len(_numeric_text(item))
        elif isinstance(item, dict):
            if (problem := depth_problem(level + 1, bounds)) is not None:
                return problem
            total += 2 + max(0, 2 * (len(item) - 1)) + 2 * len(item)  # braces, ", " and ": "
            for key, child in item.items():
                stack.append((key, level))
                stack.append((child, level + 1))
        elif isinstance(item, list | tuple):
            if (problem := depth_problem(level + 1, bounds)) is not None:
                return problem
            total += 2 + max(0, 2 * (len(item) - 1))
            stack.extend((child, level + 1) for child in item)
        else:  # not a JSON value: never produced by a parser
            raise TypeError(f"not a JSON value: {type(item).__name__}")
    return total


def value_problem(value: Any, bounds: RowBounds, *, depth: int = 0) -> Rejected | None:
    """Why `value` cannot be stored and read back when it sits `depth` levels deep in its row,
    or None (its size is not judged: `stored_size` gives it)."""
    if surely_storable(value, bounds, depth=depth):
        return None
    size = stored_size(value, bounds, depth=depth)
    return size if isinstance(size, Rejected) else None


# A float Postgres prints in full: at most 326 characters (5e-324), where `repr` wrote an "e".
_FLOAT_GROWTH = 330
_DOUBLE_DIGITS_RUN = re.compile(r"\d{%d}" % MAX_DOUBLE_DIGITS)


def surely_storable(value: Any, bounds: RowBounds, *, depth: int = 0) -> bool:
    """A quick, conservative `stored_size` for the common small plan: True only when `value`
    certainly passes every rule and takes at most `max_row_bytes` (C-speed scans of its JSON
    text; brackets and digits inside strings count too). False says nothing: walk it."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), allow_nan=False)
        size = len(text.encode("utf-8"))
    except (ValueError, UnicodeEncodeError):  # not finite, a lone surrogate
        return False
    return (size <= bounds.max_string_bytes                          # no string can be longer
            and size + _FLOAT_GROWTH * text.count("e") <= bounds.max_row_bytes
            and depth + text.count("[") + text.count("{") <= bounds.max_json_depth
            and "\\u0000" not in text                                # json.dumps escapes NUL so
            and (size < MAX_DOUBLE_DIGITS or _DOUBLE_DIGITS_RUN.search(text) is None))  # no int past a double


def _string_size(text: str, max_bytes: int) -> int | Rejected:
    """`string_problem`, or the bytes of `text` as a JSON string (encoded once, mostly)."""
    size = _utf8_size(text, max_bytes)
    if isinstance(size, Rejected) or _NEEDS_ESCAPE.search(text) is None:
        return size if isinstance(size, Rejected) else size + 2  # the quotes
    return len(encode_basestring(text).encode("utf-8"))


def _numeric_text(value: float) -> str:
    """What Postgres prints for the `numeric` it reads from `repr(value)` (positional, no -0)."""
    text = format(Decimal(repr(value)), "f")
    return text[1:] if value == 0 and text.startswith("-") else text
