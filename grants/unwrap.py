"""Unwrapping a mission's key grant as the TypeScript service does, plus two checks it lacks.

``unwrap_grant(key, grant, mission_id=…, now=…)`` never raises for a bad grant: it returns
``Unwrapped(mdk, allowlist)`` or ``GrantRefused(reason)``. Checks, first failure wins:

1. no key (unset or unusable)                               → ``not-configured``
2. ``Date.parse(expiresAt)`` is NaN or before ``now``       → ``expired`` (equal instant is valid)
3. ``wrappedKey`` is not base64 by ``atob``'s rules          → ``malformed``
4. RSA-OAEP (SHA-256, MGF1-SHA-256, no label) fails          → ``wrap-rejected``
5. the plaintext is not 32 bytes                             → ``malformed``

then ours (the TypeScript service never compares the grant to its mission), only once it would
have accepted the grant:

6. no ``derivation`` object, or ``derivation.missionId`` ≠ the mission's id → ``mission-mismatch``
7. ``derivation.version`` ≠ ``v1``                           → ``unsupported-version``

``issuedAt`` and ``derivation.tables`` are not checked (the allow-list is the record ids).
Python ``bytes`` cannot be zeroed, so unlike the TypeScript service the MDK is not wiped; it is
held only by the caller's per-mission state and never appears in a repr.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from grants.derive import DERIVATION_VERSION, MDK_BYTES, oaep_sha256
from grants.keys import MissionKey

__all__ = [
    "ALL_SKIP_REASONS",
    "EXPIRED",
    "MALFORMED",
    "MISSION_MISMATCH",
    "NOT_CONFIGURED",
    "REFERENCE_SKIP_REASONS",
    "UNSUPPORTED_VERSION",
    "WRAP_REJECTED",
    "GrantRefused",
    "SkipReason",
    "Unwrapped",
    "atob",
    "js_date_parse",
    "unwrap_grant",
]

SkipReason = Literal[
    "not-configured", "expired", "malformed", "wrap-rejected", "mission-mismatch", "unsupported-version"
]
NOT_CONFIGURED: Final = "not-configured"
EXPIRED: Final = "expired"
MALFORMED: Final = "malformed"
WRAP_REJECTED: Final = "wrap-rejected"
MISSION_MISMATCH: Final = "mission-mismatch"
UNSUPPORTED_VERSION: Final = "unsupported-version"
#: The TypeScript service's reasons (``mana_ai_grant_skips_total{reason}``), in check order.
REFERENCE_SKIP_REASONS: Final[tuple[SkipReason, ...]] = (NOT_CONFIGURED, EXPIRED, MALFORMED, WRAP_REJECTED)
#: Every reason ``unwrap_grant`` can return: the TypeScript service's, then ours.
ALL_SKIP_REASONS: Final[tuple[SkipReason, ...]] = (*REFERENCE_SKIP_REASONS, MISSION_MISMATCH, UNSUPPORTED_VERSION)


@dataclass(frozen=True, slots=True)
class Unwrapped:
    """A usable grant: the 32-byte Mission Data Key and the ``"<table>:<id>"`` allow-list."""

    mdk: bytes = field(repr=False)
    allowlist: frozenset[str]


@dataclass(frozen=True, slots=True)
class GrantRefused:
    """The grant cannot be used; the mission runs with plaintext inputs only."""

    reason: SkipReason


def unwrap_grant(key: MissionKey | None, grant: object, *, mission_id: str, now: datetime) -> Unwrapped | GrantRefused:
    """Check and unwrap ``grant``; ``now`` must be timezone-aware (``ValueError`` otherwise)."""
    now_ms = _epoch_ms(now)
    if key is None:
        return GrantRefused(NOT_CONFIGURED)
    fields: Mapping[object, object] = grant if isinstance(grant, Mapping) else {}
    expires_ms = js_date_parse(fields.get("expiresAt"))
    if expires_ms is None or expires_ms < now_ms:
        return GrantRefused(EXPIRED)
    wrapped = atob(fields.get("wrappedKey"))
    if wrapped is None:
        return GrantRefused(MALFORMED)
    try:
        mdk = key.private_key.decrypt(wrapped, oaep_sha256())
    except ValueError:  # cryptography's "Decryption failed" and wrong-length ciphertexts
        return GrantRefused(WRAP_REJECTED)
    if len(mdk) != MDK_BYTES:
        return GrantRefused(MALFORMED)
    derivation = fields.get("derivation")
    if not isinstance(derivation, Mapping) or derivation.get("missionId") != mission_id:
        return GrantRefused(MISSION_MISMATCH)
    if derivation.get("version") != DERIVATION_VERSION:
        return GrantRefused(UNSUPPORTED_VERSION)
    record_ids = derivation.get("recordIds")
    ids = record_ids if isinstance(record_ids, list | tuple) else ()
    return Unwrapped(mdk, frozenset(r for r in ids if isinstance(r, str)))


# --- atob ----------------------------------------------------------------------------------

_ASCII_WHITESPACE = re.compile("[\t\n\f\r ]")  # the WHATWG set: no \v, nothing beyond ASCII
_BASE64_ALPHABET = re.compile("[A-Za-z0-9+/]*")


def atob(value: object) -> bytes | None:
    """WHATWG forgiving-base64 decode (``atob``); ``None`` where ``atob`` throws.

    ASCII whitespace is removed anywhere; one or two trailing ``=`` are dropped when the
    length is a multiple of 4; then any character outside ``A-Za-z0-9+/`` or a length ≡ 1
    (mod 4) fails; leftover bits are discarded. Non-strings fail too: ``atob(x)`` would
    stringify them, which for a JSON value is never a meaningful wrapped key.
    """
    if not isinstance(value, str):
        return None
    data = _ASCII_WHITESPACE.sub("", value)
    if len(data) % 4 == 0:
        if data.endswith("=="):
            data = data[:-2]
        elif data.endswith("="):
            data = data[:-1]
    if len(data) % 4 == 1 or not _BASE64_ALPHABET.fullmatch(data):
        return None
    padded = data + "=" * (-len(data) % 4)
    return binascii.a2b_base64(padded.encode("ascii"))  # non-strict: ignores leftover bits


# --- Date.parse ----------------------------------------------------------------------------

# ECMAScript's Date Time String Format (ES2024 §21.4.1.32), digits ASCII only. Fractions of any
# length are accepted and truncated to milliseconds, as V8 and JavaScriptCore do. Everything
# else (engines' legacy formats included) is NaN here, so such a grant counts as expired.
_ISO_DATE = re.compile(
    r"(?P<year>[0-9]{4}|[+-][0-9]{6})"
    r"(?:-(?P<month>[0-9]{2})(?:-(?P<day>[0-9]{2}))?)?"
    r"(?:T(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]+))?)?"
    r"(?P<offset>Z|[+-][0-9]{2}:[0-9]{2})?)?"
)
_MAX_TIME_MS: Final = 8_640_000_000_000_000  # ±100,000,000 days around the epoch
_MS_PER_MINUTE: Final = 60_000
_MS_PER_DAY: Final = 86_400_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def js_date_parse(value: object) -> int | None:
    """``Date.parse(value)`` in epoch milliseconds for ISO strings; ``None`` for NaN.

    A date-time without an offset is local time in JavaScript; this pure port has no zone to
    consult and reads it as UTC (the TypeScript service runs in a UTC container).
    """
    if not isinstance(value, str):
        return None
    match = _ISO_DATE.fullmatch(value)
    if match is None or match["year"] == "-000000":
        return None
    year = int(match["year"])
    month = int(match["month"] or 1)
    day = int(match["day"] or 1)
    hour, minute, second = int(match["hour"] or 0), int(match["minute"] or 0), int(match["second"] or 0)
    millis = int((match["fraction"] or "0")[:3].ljust(3, "0"))
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)):
        return None
    if hour == 24:
        if minute or second or millis:
            return None
    elif hour > 23:
        return None
    if minute > 59 or second > 59:
        return None
    offset_minutes = 0
    offset = match["offset"]
    if offset is not None and offset != "Z":
        off_hours, off_minutes = int(offset[1:3]), int(offset[4:6])
        if off_hours > 23 or off_minutes > 59:
            return None
        offset_minutes = (off_hours * 60 + off_minutes) * (1 if offset[0] == "+" else -1)
    time_ms = (
        _days_from_civil(year, month, day) * _MS_PER_DAY
        + ((hour * 60 + minute - offset_minutes) * 60 + second) * 1000
        + millis
    )
    return time_ms if abs(time_ms) <= _MAX_TIME_MS else None


def _epoch_ms(now: datetime) -> int:
    """``Date.now()`` for ``now``: whole milliseconds since the epoch, rounded down."""
    if now.utcoffset() is None:
        raise ValueError("unwrap_grant needs an aware datetime for now, got a naive one")
    return (now - _EPOCH) // timedelta(milliseconds=1)


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 in the proleptic Gregorian calendar, for any year (H. Hinnant)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468
