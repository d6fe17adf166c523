"""URLs as they may be shown: no userinfo, no query, no fragment."""

from __future__ import annotations

import pytest

from observability.redact import safe_url


@pytest.mark.parametrize(("url", "shown"), [
    ("http://user:pw@llm:3020/v1?key=k#f", "http://llm:3020/v1"),
    ("https://llm.example.com", "https://llm.example.com"),
    ("http://[::1]:8080/x", "http://[::1]:8080/x"),
    ("postgresql://mana:hunter2@db:5432/mana_sync?sslmode=require", "postgresql://db:5432/mana_sync"),
    ("http://host:notaport/", "<unparsable url>"),
])
def test_credentials_and_queries_are_dropped(url: str, shown: str) -> None:
    assert safe_url(url) == shown
