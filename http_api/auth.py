"""The `/internal/*` service-key gate (constant-time compare)."""

from __future__ import annotations

import hmac

UNAUTHORIZED = {"error": "invalid or missing service key"}


def service_key_ok(presented: str | None, expected: str) -> bool:
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))
