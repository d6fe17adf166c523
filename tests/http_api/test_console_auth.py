"""The console's session signing, CSRF tokens and login limiter, and its pure view helpers."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from http_api.console_auth import LoginLimiter, SessionSigner
from http_api.console_views import REASON_WORDS, age, bar_chart

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.0


def test_a_session_is_valid_until_it_expires_and_only_under_the_same_service_key() -> None:
    signer = SessionSigner("service-key-1", ttl_s=3600)
    value, session = signer.issue(NOW)
    assert signer.verify(value, NOW + 3599) == session and session.expires_at == NOW + 3600
    assert signer.verify(value, NOW + 3600) is None  # expired
    assert signer.verify(value, NOW - 3600) is None  # issued in the future: a clock gone wrong
    assert SessionSigner("service-key-2").verify(value, NOW) is None  # the key changed
    issued, expires, nonce, mac = value.split(".")
    assert signer.verify(f"{issued}.{int(expires) + 86400}.{nonce}.{mac}", NOW) is None  # extended by hand
    assert signer.verify(f"{issued}.{expires}.{nonce}x.{mac}", NOW) is None
    for junk in (None, "", "a.b.c", "1.2.3.4.5", "ä.ö.ü.ß", value + "x"):
        assert signer.verify(junk, NOW) is None


def test_logout_revokes_one_session_and_csrf_tokens_belong_to_their_session() -> None:
    signer = SessionSigner("service-key-1")
    first, one = signer.issue(NOW)
    second, two = signer.issue(NOW)
    assert signer.csrf_ok(one, signer.csrf_token(one)) and not signer.csrf_ok(one, signer.csrf_token(two))
    assert not signer.csrf_ok(one, None) and not signer.csrf_ok(one, "") and not signer.csrf_ok(one, "ü")
    signer.revoke(one, NOW)
    assert signer.verify(first, NOW + 1) is None and signer.verify(second, NOW + 1) == two


@given(st.text(max_size=300))
def test_no_text_is_taken_for_a_session(value: str) -> None:
    """Whatever a client sends as the cookie, only a value the signer issued is a session."""
    assert SessionSigner("service-key-1").verify(value, NOW) is None


def test_the_limiter_refuses_a_client_after_five_failures_for_the_window() -> None:
    limiter = LoginLimiter(max_failures=5, window_s=60, max_clients=3)
    for i in range(4):
        limiter.failed("10.0.0.1", NOW + i)
    assert limiter.retry_after("10.0.0.1", NOW + 4) == 0
    limiter.failed("10.0.0.1", NOW + 4)
    assert limiter.retry_after("10.0.0.1", NOW + 4) == 56  # until the first failure is a minute old
    assert limiter.retry_after("10.0.0.1", NOW + 59.5) == 0.5
    assert limiter.retry_after("10.0.0.1", NOW + 60) == 0
    assert limiter.retry_after("10.0.0.2", NOW + 4) == 0  # per client
    limiter.succeeded("10.0.0.1")
    assert limiter.retry_after("10.0.0.1", NOW + 5) == 0
    for client in ("a", "b", "c", "d"):  # at most max_clients are tracked; the oldest go first
        for _ in range(5):
            limiter.failed(client, NOW)
    assert [limiter.retry_after(c, NOW) > 0 for c in ("a", "b", "c", "d")] == [False, True, True, True]


def test_a_reserved_attempt_counts_until_it_succeeds() -> None:
    limiter = LoginLimiter(max_failures=5, window_s=60)
    assert [limiter.reserve("10.0.0.1", NOW) for _ in range(7)] == [0, 0, 0, 0, 0, 60, 60]  # none answered yet
    assert limiter.reserve("10.0.0.2", NOW) == 0  # per client
    assert limiter.reserve("10.0.0.1", NOW + 30) == 30
    assert limiter.reserve("10.0.0.1", NOW + 60) == 0  # the first attempts are a minute old
    limiter.succeeded("10.0.0.2")  # the right key clears the client's record
    assert [limiter.reserve("10.0.0.2", NOW + 1) for _ in range(5)] == [0] * 5


def test_every_reason_of_the_inspection_docs_has_words() -> None:
    table = (ROOT / "docs" / "inspection.md").read_text().split("`reason`, the first that applies")[1].split("\n## ")[0]
    documented = set(re.findall(r"^\| `([a-z-]+)`(?:, `([a-z-]+)`)?", table, re.MULTILINE))
    codes = {code for pair in documented for code in pair if code}
    assert codes == set(REASON_WORDS)


def test_the_chart_scales_to_the_busiest_minute() -> None:
    chart = bar_chart([0, 2, 4], width=300, height=100)
    assert (chart.peak, chart.total) == (4, 6)
    assert [(b.x, b.height, b.y) for b in chart.bars] == [(1.0, 0.0, 100.0), (101.0, 50.0, 50.0), (201.0, 100.0, 0.0)]
    assert [b.label for b in chart.bars] == ["2 min ago: 0 planned", "1 min ago: 2 planned", "this minute: 4 planned"]
    assert bar_chart([0] * 60).peak == 0


def test_ages_read_like_a_person_would_say_them() -> None:
    assert [age(s) for s in (None, -3, 4.4, 89, 600, 7200, 3 * 86400)] == ["—", "0 s", "4 s", "89 s", "10 min",
                                                                           "2 h", "3 d"]
