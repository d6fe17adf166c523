"""What of a URL may be shown: scheme, host, port and path; never userinfo or the query (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit


def safe_url(url: str) -> str:
    """`url` without userinfo, query string and fragment (credentials live there)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<unparsable url>"
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))


class Redactor:
    """Replaces every configured secret in a text with `***` (error strings that an upstream
    built may echo a credential back: "invalid key sk-…")."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        # longest first, so a secret containing another is replaced whole; very short values
        # would turn ordinary words into stars
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text
