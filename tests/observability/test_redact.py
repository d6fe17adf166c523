"""URLs as they may be shown: no userinfo, no query, no fragment."""

from __future__ import annotations

import pytest

from observability.redact import Redactor, safe_url


@pytest.mark.parametrize(("url", "shown"), [
    ("http://user:pw@llm:3020/v1?key=k#f", "http://llm:3020/v1"),
    ("https://llm.example.com", "https://llm.example.com"),
    ("http://[::1]:8080/x", "http://[::1]:8080/x"),
    ("postgresql://mana:hunter2@db:5432/mana_sync?sslmode=require", "postgresql://db:5432/mana_sync"),
    ("http://host:notaport/", "<unparsable url>"),
])
def test_credentials_and_queries_are_dropped(url: str, shown: str) -> None:
    assert safe_url(url) == shown


def test_configured_secrets_are_starred_in_error_texts() -> None:
    from settings import load_settings

    settings = load_settings({"MANA_SERVICE_KEY": "svc-key-123-abcdefgh", "MANA_AI_LLM_API_KEY": "sk-llm-456",
                              "MANA_AI_RESEARCH_TOKEN": "tok-789abc",
                              "SYNC_DATABASE_URL": "postgresql://mana:pw-0123@db/mana_sync",
                              "MANA_AI_PRIVATE_KEY_PEM": "-----BEGIN PRIVATE KEY-----\\nMIIBVQIBADANBgkq\\n"
                                                         "-----END PRIVATE KEY-----"})
    redact = Redactor(settings.secrets())
    text = "mana-llm 401: bad key sk-llm-456 (svc-key-123-abcdefgh, tok-789abc, pw-0123, MIIBVQIBADANBgkq)"
    assert redact(text) == "mana-llm 401: bad key *** (***, ***, ***, ***)"
    assert redact("nothing to hide") == "nothing to hide"
