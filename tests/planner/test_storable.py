"""The shared rules of what a stored JSON value must respect (planner/storable.py), pure."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from planner.storable import Rejected, RowBounds, stored_size, surely_storable, value_problem
from store.bounds import decode_json

PROPERTY = settings(max_examples=300, deadline=None, database=None)
SMALL = RowBounds(max_json_depth=5, max_string_bytes=24, max_row_bytes=400)
TEXT = st.text(st.characters(codec=None), max_size=30) | st.sampled_from(["a\x00", "\ud800", "é" * 13, "𝄞" * 7])
LEAF = (st.none() | st.booleans() | st.integers(-(10**310), 10**310) | st.sampled_from([10**309, -(10**400)])
        | st.floats(allow_nan=False, allow_infinity=False) | TEXT)
VALUE = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                     max_leaves=25)


@PROPERTY
@given(VALUE, st.integers(0, 3))
def test_the_quick_check_never_passes_what_the_walk_refuses(value: Any, depth: int) -> None:
    """`surely_storable` is conservative: when it says yes, the exact walk agrees and the value
    is within the row bound."""
    if surely_storable(value, SMALL, depth=depth):
        size = stored_size(value, SMALL, depth=depth)
        assert isinstance(size, int) and size <= SMALL.max_row_bytes
    assert (value_problem(value, SMALL, depth=depth) is None) == (
        not isinstance(stored_size(value, SMALL, depth=depth), Rejected))


@PROPERTY
@given(VALUE)
def test_the_writer_refuses_exactly_what_the_reader_rejects(value: Any) -> None:
    """What the refresh's decoder rejects in a row's text, the writer's walk refuses in the value
    and the other way round (one definition: NUL, surrogates, strings, depth, numbers); the
    reason may differ when a value breaks two rules (each reports the first it meets)."""
    try:
        text = json.dumps(value)
    except ValueError:
        return
    read = decode_json(text, SMALL)
    written = stored_size(value, SMALL)
    assert isinstance(read, Rejected) == isinstance(written, Rejected), (read, written)
