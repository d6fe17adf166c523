"""The instant a mission's `nextRunAt` names (pure).

The database reads it (`mana_ai.instant_of`, migration 0012) into `mission_snapshots.next_run_at`,
which the due query and the due timer compare. This is the same grammar for what reads a record
in Python: the refresh's report of a value that names no instant, and the "why (not) due"
verdict of inspection and the console. A test checks that both agree on every value.

Accepted: ``YYYY-MM-DD``, then ``T`` (or ``t``, or a space), then ``HH:MM`` with optional ``:SS``
and an optional fraction (``.`` or ``,``; digits past microseconds are dropped), then an optional
offset ``Z`` (``z``), ``±HH:MM``, ``±HHMM`` or ``±HH`` (at most ±15:59). Without an offset the
time is UTC. Anything else (a date or time that does not exist, an instant outside the years
1-9999 UTC) names no instant: the mission is never due.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2})"
    r"(?::([0-9]{2})(?:[.,]([0-9]{1,6})[0-9]*)?)?"
    r"(?:([Zz])|([+-])([0-9]{2})(?::?([0-9]{2}))?)?")


def instant_of(value: object) -> datetime | None:
    """The aware UTC instant `value` names, or None (not a string, or not in the grammar)."""
    if not isinstance(value, str):
        return None
    m = _ISO.fullmatch(value)
    if m is None:
        return None
    oh, om = int(m[10] or 0), int(m[11] or 0)
    if oh > 15 or om > 59:  # Postgres holds offsets up to ±15:59
        return None
    try:
        local = datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6] or 0),
                         int((m[7] or "0").ljust(6, "0")), tzinfo=timezone.utc)
    except ValueError:  # no such date or time (month 13, 30 February, hour 24, second 60)
        return None
    offset = timedelta(hours=oh, minutes=om)
    try:
        return local + offset if m[9] == "-" else local - offset
    except OverflowError:  # the offset carries it outside the years 1-9999 (UTC)
        return None
