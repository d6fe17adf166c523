"""JavaScript value semantics the reference relies on (truthiness, ``trim``, ``\\s``)."""

from __future__ import annotations

import math

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
