"""JavaScript value semantics the TypeScript service relies on (truthiness, ``trim``, ``\\s``)."""

from __future__ import annotations

import math
import re
from decimal import Decimal

# ECMAScript WhiteSpace + LineTerminator: what ``String.prototype.trim`` strips and the regex
# ``\s`` matches. Python's ``str.strip()``/``\s`` differ at the edges (they include U+001C–U+001F
# and U+0085, and miss U+FEFF), so the port spells the JS set out.
JS_WHITESPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def js_truthy(value: object) -> bool:
    """``Boolean(value)`` for JSON values: null, false, 0, NaN and "" are falsy, [] and {} not."""
    if value is None or value is False:
        return False
    if isinstance(value, bool):
        return True
    if isinstance(value, int | float):
        return value != 0 and not (isinstance(value, float) and math.isnan(value))
    if isinstance(value, str):
        return value != ""
    return True


def js_trim(text: str) -> str:
    """``String.prototype.trim``."""
    return text.strip(JS_WHITESPACE)


def js_string(value: object) -> str:
    """``String(value)`` for JSON values (arrays join with ``,``; objects are ``[object Object]``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number_to_string(value)
    if isinstance(value, list):
        return ",".join("" if v is None else js_string(v) for v in value)
    return "[object Object]"


def _number_to_string(value: float) -> str:
    """ECMAScript Number::toString(10): shortest round-trip digits, JS exponent rules."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    if value < 0:
        return "-" + _number_to_string(-value)
    # repr() gives the shortest round-trip digits; as a Decimal they read as digits × 10^exponent
    _, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    stripped = digits.rstrip("0")
    n = len(digits) + int(exponent)  # value = 0.<digits> × 10^n
    digits = stripped
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    e = n - 1
    sign = "+" if e >= 0 else "-"
    body = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{body}e{sign}{abs(e)}"


_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_RADIX = {"0x": 16, "0o": 8, "0b": 2}


def js_number(value: object) -> float:
    """``Number(value)`` for JSON values (NaN where JavaScript gives NaN)."""
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return js_number(js_string(value))  # ToPrimitive joins the array
    if not isinstance(value, str):
        return math.nan
    text = js_trim(value)
    if not text:
        return 0.0
    if text in ("Infinity", "+Infinity", "-Infinity"):
        return -math.inf if text[0] == "-" else math.inf
    radix = _RADIX.get(text[:2].lower())
    if radix is not None:
        try:
            return float(int(text[2:], radix)) if text[2:].isalnum() else math.nan
        except ValueError:
            return math.nan
    if _DECIMAL.fullmatch(text):
        return float(text)
    return math.nan
