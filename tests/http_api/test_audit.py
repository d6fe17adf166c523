"""`GET /api/v1/me/ai-audit`: EdDSA JWTs against a fake mana-auth's JWKS, rows from real Postgres.

The app is built with `create_app(AppDeps(...))` and served on loopback (the supervisor does not
pass a `JwksCache` yet); a fake mana-auth publishes the JWKS of keys generated here, and tokens
are signed here with `cryptography`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from quart import Response
from quart_trio import QuartTrio

from actors.messages import MissionDue, MissionOutcome
from actors.registry import AgentRegistry
from actors.snapshot import SnapshotActor
from daemon import daemon_settings
from http_api.app import AppDeps, create_app
from http_api.audit import parse_limit
from http_api.jwt import (Claims, Jwks, JwksCache, JwksUnavailable, JwtRejected, RejectReason, jwks_url, parse_jwks,
                          verify)
from loopback import serving
from observability.metrics import Metrics
from seed import fetch
from settings import ConfigError, load_settings

PATH = "/api/v1/me/ai-audit"
ISSUER = "https://auth.mana.how"
WEBAPP = "https://mana-ai.mana.how"
TEXT = "text/plain; charset=UTF-8"
T0 = datetime(2026, 4, 15, 9, 0, 0, 123456, tzinfo=timezone.utc)


# --- keys and tokens ------------------------------------------------------------------------


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Key:
    kid: str
    private: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def jwk(self) -> dict[str, str]:
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw), "kid": self.kid, "alg": "EdDSA", "use": "sig"}


K1, K2 = Key("k1"), Key("k2")


def claims(sub: object = "u-1", **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    body: dict[str, Any] = {"sub": sub, "iss": ISSUER, "aud": "mana", "iat": now, "exp": now + 900,
                            "email": "u1@example.com", "role": "user", "sid": "s-1"}
    if sub is None:
        del body["sub"]
    body.update(overrides)
    return body


def sign(body: dict[str, Any], key: Key = K1, **header: Any) -> str:
    head = b64url(json.dumps({"alg": "EdDSA", "kid": key.kid, "typ": "JWT", **header}).encode())
    payload = b64url(json.dumps(body).encode())
    return f"{head}.{payload}.{b64url(key.private.sign(f'{head}.{payload}'.encode()))}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- a fake mana-auth -----------------------------------------------------------------------


class FakeAuth:
    """Publishes `keys` at the JWKS path; `status`/`body` override the answer, `release` gates it."""

    def __init__(self, *keys: Key) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.status = 200
        self.body: str | None = None
        self.entered = trio.Event()
        self.release: trio.Event | None = None
        self.app = QuartTrio("fake-mana-auth")
        self.app.add_url_rule("/api/v1/auth/jwks", "jwks", self._jwks)

    async def _jwks(self) -> Response:
        self.fetches += 1
        self.entered.set()
        if self.release is not None:
            await self.release.wait()
        body = self.body if self.body is not None else json.dumps({"keys": [k.jwk() for k in self.keys]})
        return Response(body, status=self.status, content_type="application/json")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def running_auth(*keys: Key) -> AsyncIterator[tuple[FakeAuth, str]]:
    auth = FakeAuth(*keys)
    async with serving(auth.app) as url:
        yield auth, url


@dataclass
class AuditDaemon:
    client: httpx.AsyncClient
    cache: JwksCache
    clock: FakeClock


async def _no_runs(due: MissionDue) -> MissionOutcome:
    raise AssertionError("no mission runs in these tests")


async def _no_release(due: MissionDue, reason: str) -> None:
    raise AssertionError("no claims in these tests")


@asynccontextmanager
async def audit_daemon(pool: asyncpg.Pool, auth_url: str, *, timeout_s: float = 5.0,
                       **overrides: Any) -> AsyncIterator[AuditDaemon]:
    """The daemon's app (audit route included) on loopback, its JWKS cache on a fake clock."""
    settings = daemon_settings(mana_auth_url=auth_url, **overrides)
    metrics = Metrics()
    registry = AgentRegistry(_no_runs, _no_release, metrics, mailbox_size=1, legacy_limit=1)  # never started
    clock = FakeClock()
    async with httpx.AsyncClient() as http:
        cache = JwksCache(http, jwks_url(settings.mana_auth_url), timeout_s=timeout_s, clock=clock)
        app = create_app(AppDeps(settings, metrics, pool, SnapshotActor(pool, settings, metrics), registry,
                                 jwks=cache))
        async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield AuditDaemon(client, cache, clock)


async def add_audit(pool: asyncpg.Pool, user: str, mission: str, record: str, ts: datetime,
                    status: str = "ok", reason: str | None = None) -> None:
    await fetch(pool, "INSERT INTO mana_ai.decrypt_audit (user_id, mission_id, table_name, record_id, status, "
                      "reason, ts) VALUES ($1, $2, 'notes', $3, $4, $5, $6) RETURNING id",
                user, mission, record, status, reason, ts)


# --- rows -----------------------------------------------------------------------------------


async def test_rows_of_the_signed_in_user_newest_first(pool: asyncpg.Pool) -> None:
    await add_audit(pool, "u-1", "m-1", "n1", T0)
    await add_audit(pool, "u-1", "m-1", "n2", T0 + timedelta(seconds=2), "failed", "ciphertext-malformed")
    await add_audit(pool, "u-1", "m-2", "n3", T0 + timedelta(seconds=1), "scope-violation",
                    "record-not-in-grant-allowlist")
    await add_audit(pool, "u-2", "m-1", "secret", T0 + timedelta(seconds=3))
    async with running_auth(K1) as (_, auth_url), audit_daemon(pool, auth_url) as d:
        response = await d.client.get(PATH, headers=bearer(sign(claims("u-1"))))
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        rows = response.json()["rows"]
        assert [r["recordId"] for r in rows] == ["n2", "n3", "n1"]  # newest first, u-2's row absent
        assert rows[0] == {"id": rows[0]["id"], "missionId": "m-1", "iterationId": None, "tableName": "notes",
                           "recordId": "n2", "status": "failed", "reason": "ciphertext-malformed",
                           "ts": "2026-04-15T09:00:02.123Z"}
        assert list(rows[0]) == ["id", "missionId", "iterationId", "tableName", "recordId", "status", "reason", "ts"]
        assert all(isinstance(r["id"], str) and r["id"].isdigit() for r in rows)

        only_m1 = (await d.client.get(PATH, params={"missionId": "m-1"}, headers=bearer(sign(claims("u-1"))))).json()
        assert [r["recordId"] for r in only_m1["rows"]] == ["n2", "n1"]
        other = (await d.client.get(PATH, params={"missionId": "m-1"}, headers=bearer(sign(claims("u-2"))))).json()
        assert [r["recordId"] for r in other["rows"]] == ["secret"]
        nobody = (await d.client.get(PATH, headers=bearer(sign(claims("u-3"))))).json()
        assert nobody == {"rows": []}
    idle = await fetch(pool, "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                             "AND state LIKE 'idle in transaction%'")
    assert idle[0]["n"] == 0


async def test_limit_has_parse_int_semantics_and_is_clamped(pool: asyncpg.Pool) -> None:
    await fetch(pool, "INSERT INTO mana_ai.decrypt_audit (user_id, mission_id, table_name, record_id, status, ts) "
                      "SELECT 'u-1', 'm-big', 'notes', 'n' || g, 'ok', $1::timestamptz - g * interval '1 second' "
                      "FROM generate_series(1, 1001) g RETURNING 1", T0)
    async with running_auth(K1) as (_, auth_url), audit_daemon(pool, auth_url) as d:
        headers = bearer(sign(claims("u-1")))
        for raw, expected in [("5abc", 5), ("x", 200), ("0", 1), ("5000", 1000), (None, 200), ("", 200),
                              (" 7", 7), ("-3", 1), ("1e3", 1), ("9" * 5000, 1000)]:
            params = {} if raw is None else {"limit": raw}
            rows = (await d.client.get(PATH, params=params, headers=headers)).json()["rows"]
            assert len(rows) == expected, raw
            assert rows[0]["recordId"] == "n1"


@pytest.mark.parametrize(("raw", "expected"), [
    ("5abc", 5), ("x", 200), ("0", 1), ("5000", 1000), (None, 200), ("+12", 12), ("007", 7), ("-0", 1),
    ("\t 42 ", 42), ("3.9", 3), ("0x10", 1), ("1000", 1000), ("1001", 1000), ("12345678901234567890", 1000),
])
def test_parse_limit(raw: str | None, expected: int) -> None:
    assert parse_limit(raw) == expected


# --- refusals -------------------------------------------------------------------------------


async def test_each_refusal_is_a_401_with_the_reference_text(pool: asyncpg.Pool) -> None:
    now = int(time.time())
    unsigned = ".".join([b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode()),
                         b64url(json.dumps(claims()).encode()), ""])
    good = sign(claims())
    forged = good[: good.rindex(".") + 1] + b64url(Ed25519PrivateKey.generate().sign(b"x"))
    cases: list[tuple[dict[str, str], str]] = [
        ({}, "Missing authorization header"),
        ({"Authorization": "Basic dTpw"}, "Missing authorization header"),
        ({"Authorization": f"bearer {good}"}, "Missing authorization header"),
        ({"Authorization": good}, "Missing authorization header"),
        (bearer(sign(claims(None))), "Token missing subject claim"),
        (bearer(sign(claims(""))), "Token missing subject claim"),
        (bearer("not-a-jwt"), "Invalid or expired token"),
        (bearer(unsigned), "Invalid or expired token"),
        (bearer(sign(claims(), alg="HS256")), "Invalid or expired token"),
        (bearer(forged), "Invalid or expired token"),
        (bearer(sign(claims(), key=Key("k1"))), "Invalid or expired token"),  # same kid, other key
        (bearer(sign(claims(None), key=Key("k1"))), "Invalid or expired token"),  # bad signature wins
        (bearer(sign(claims(iss="https://evil.example"))), "Invalid or expired token"),
        (bearer(sign(claims(aud="other"))), "Invalid or expired token"),
        (bearer(sign(claims(aud=["other", "x"]))), "Invalid or expired token"),
        (bearer(sign(claims(exp=now - 60))), "Invalid or expired token"),
        (bearer(sign(claims(nbf=now + 120))), "Invalid or expired token"),
        (bearer(sign({k: v for k, v in claims().items() if k != "exp"})), "Invalid or expired token"),
    ]
    async with running_auth(K1) as (_, auth_url), audit_daemon(pool, auth_url) as d:
        for headers, text in cases:
            response = await d.client.get(PATH, headers=headers)
            assert (response.status_code, response.text) == (401, text), headers
            assert response.headers["content-type"] == TEXT
        # within the leeway, audience in a list, the daemon's own MANA_AUTH_URL as issuer: accepted
        for body in (claims(exp=now - 10), claims(nbf=now + 10), claims(aud=["x", "mana"]), claims(iss=auth_url)):
            assert (await d.client.get(PATH, headers=bearer(sign(body)))).status_code == 200, body


async def test_jwt_issuer_and_audience_settings_are_honoured(pool: asyncpg.Pool) -> None:
    async with running_auth(K1) as (_, auth_url), \
            audit_daemon(pool, auth_url, jwt_issuer="https://issuer.test", jwt_audience="mana-ai") as d:
        ok = claims(iss="https://issuer.test", aud="mana-ai")
        assert (await d.client.get(PATH, headers=bearer(sign(ok)))).status_code == 200
        assert (await d.client.get(PATH, headers=bearer(sign(claims(aud="mana"))))).status_code == 401
        assert (await d.client.get(PATH, headers=bearer(sign(claims(iss="http://localhost:3001",
                                                                     aud="mana-ai"))))).status_code == 200


# --- the key set ----------------------------------------------------------------------------


async def test_an_unknown_kid_forces_one_refresh_at_most_every_30_seconds(pool: asyncpg.Pool) -> None:
    async with running_auth(K1) as (auth, auth_url), audit_daemon(pool, auth_url) as d:
        assert (await d.client.get(PATH, headers=bearer(sign(claims(), K1)))).status_code == 200
        assert auth.fetches == 1
        auth.keys = [K1, K2]  # mana-auth rotates: a new key, tokens signed with it
        # fetched just now: no new fetch for an unknown kid yet
        assert (await d.client.get(PATH, headers=bearer(sign(claims(), K2)))).status_code == 401
        assert auth.fetches == 1
        d.clock.now += 31
        assert (await d.client.get(PATH, headers=bearer(sign(claims(), K2)))).status_code == 200
        assert auth.fetches == 2
        # a kid nobody publishes: refused, and no fetch within the cooldown
        for _ in range(3):
            response = await d.client.get(PATH, headers=bearer(sign(claims(), Key("k-bogus"))))
            assert (response.status_code, response.text) == (401, "Invalid or expired token")
        assert auth.fetches == 2
        d.clock.now += 31
        assert (await d.client.get(PATH, headers=bearer(sign(claims(), Key("k-bogus"))))).status_code == 401
        assert auth.fetches == 3
        # known kids use the cache until it is 5 minutes old
        assert (await d.client.get(PATH, headers=bearer(sign(claims(), K1)))).status_code == 200
        assert auth.fetches == 3
        d.clock.now += 300
        assert (await d.client.get(PATH, headers=bearer(sign(claims(), K1)))).status_code == 200
        assert auth.fetches == 4
        # a token that does not parse fetches nothing
        d.clock.now += 300
        assert (await d.client.get(PATH, headers=bearer("a.b"))).status_code == 401
        assert auth.fetches == 4


async def test_jwks_down_is_a_401_logged_once_per_failed_fetch(pool: asyncpg.Pool,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    async with running_auth(K1) as (_, gone_url):
        pass  # the server has stopped: its port refuses connections
    caplog.set_level(logging.WARNING, logger="http_api.jwt")
    async with audit_daemon(pool, gone_url) as d:
        for _ in range(2):
            response = await d.client.get(PATH, headers=bearer(sign(claims())))
            assert (response.status_code, response.text) == (401, "Invalid or expired token")
            d.clock.now += 30  # a failed fetch is remembered for the cooldown
    failures = [r for r in caplog.records if r.getMessage() == "auth.jwks_unavailable"]
    assert len(failures) == 2 and all(r.levelno == logging.WARNING for r in failures)

    async with running_auth(K1) as (auth, auth_url), audit_daemon(pool, auth_url, timeout_s=0.5) as d:
        auth.status, auth.body = 503, "upstream down"
        assert (await d.client.get(PATH, headers=bearer(sign(claims())))).status_code == 401
        d.clock.now += 30
        auth.status, auth.body = 200, "<html>not json</html>"
        assert (await d.client.get(PATH, headers=bearer(sign(claims())))).status_code == 401
        d.clock.now += 30
        auth.body = json.dumps({"keys": "nope"})
        assert (await d.client.get(PATH, headers=bearer(sign(claims())))).status_code == 401
        d.clock.now += 30
        auth.release = trio.Event()  # hangs past the cache's timeout
        assert (await d.client.get(PATH, headers=bearer(sign(claims())))).status_code == 401
        auth.release.set()
        auth.release, auth.body = None, None  # mana-auth is back: the next request after the cooldown fetches
        d.clock.now += 30
        assert (await d.client.get(PATH, headers=bearer(sign(claims())))).status_code == 200
        assert auth.fetches == 5


async def test_a_failed_fetch_is_remembered_for_the_cooldown(pool: asyncpg.Pool,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """No key set was ever fetched and mana-auth fails: one fetch and one warning per cooldown,
    however many requests come, each answered as the first one was."""
    caplog.set_level(logging.WARNING, logger="http_api.jwt")
    async with running_auth(K1) as (auth, auth_url), audit_daemon(pool, auth_url) as d:
        auth.status, auth.body = 503, "upstream down"
        answers = []

        async def ask() -> None:
            response = await d.client.get(PATH, headers=bearer(sign(claims())))
            answers.append((response.status_code, response.text))

        for _ in range(10):
            await ask()
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(ask)
        d.clock.now += 29
        await ask()
        assert answers == [(401, "Invalid or expired token")] * 21
        assert auth.fetches == 1
        assert [r.getMessage() for r in caplog.records] == ["auth.jwks_unavailable"]
        d.clock.now += 1  # the cooldown has passed: one new fetch, which fails again
        assert (await d.client.get(PATH, headers=bearer(sign(claims())))).status_code == 401
        assert (await d.client.get(PATH, headers=bearer(sign(claims())))).status_code == 401
        assert auth.fetches == 2 and len(caplog.records) == 2
        auth.status, auth.body = 200, None  # mana-auth is back: after the cooldown, the next request fetches
        d.clock.now += 30
        assert (await d.client.get(PATH, headers=bearer(sign(claims())))).status_code == 200
        assert auth.fetches == 3 and len(caplog.records) == 2


async def test_concurrent_callers_share_one_fetch_and_its_failure() -> None:
    async with running_auth(K1) as (auth, auth_url), httpx.AsyncClient() as http:
        clock = FakeClock()
        cache = JwksCache(http, jwks_url(auth_url), clock=clock)
        outcomes: list[object] = []

        async def ask() -> None:
            try:
                outcomes.append(await cache.keys_for("k1"))
            except JwksUnavailable as exc:
                outcomes.append(exc)

        for status, expected_type in ((503, JwksUnavailable), (200, Jwks)):
            auth.status, auth.release, auth.entered = status, trio.Event(), trio.Event()
            outcomes.clear()
            before = auth.fetches
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    for _ in range(5):
                        nursery.start_soon(ask)
                    await auth.entered.wait()  # the first caller's fetch is in mana-auth
                    await trio.testing.wait_all_tasks_blocked()
                    auth.release.set()
            assert auth.fetches == before + 1
            assert len(outcomes) == 5 and all(isinstance(o, expected_type) for o in outcomes)
            clock.now += 30  # past the cooldown a failed fetch is remembered for


# --- CORS -----------------------------------------------------------------------------------


async def test_cors_for_listed_origins_only(pool: asyncpg.Pool) -> None:
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    async with running_auth(K1) as (_, auth_url), audit_daemon(pool, auth_url, cors_origins=(WEBAPP,)) as d:
        response = await d.client.options(PATH, headers={"Origin": WEBAPP, **preflight})
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == WEBAPP
        assert response.headers["access-control-allow-methods"] == "GET, OPTIONS"
        assert response.headers["access-control-allow-headers"] == "Authorization"
        assert "Origin" in response.headers["vary"]

        response = await d.client.options(PATH, headers={"Origin": "https://evil.example", **preflight})
        assert response.status_code == 204
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-methods" not in response.headers

        ok = await d.client.get(PATH, headers={"Origin": WEBAPP, **bearer(sign(claims()))})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == WEBAPP
        refused = await d.client.get(PATH, headers={"Origin": WEBAPP})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == WEBAPP
        other = await d.client.get(PATH, headers={"Origin": "https://evil.example", **bearer(sign(claims()))})
        assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
        # other routes get no CORS headers
        metrics = await d.client.get("/metrics", headers={"Origin": WEBAPP})
        assert "access-control-allow-origin" not in metrics.headers

    async with running_auth(K1) as (_, auth_url), audit_daemon(pool, auth_url) as d:  # no origins configured
        response = await d.client.options(PATH, headers={"Origin": WEBAPP, **preflight})
        assert response.status_code == 204 and "access-control-allow-origin" not in response.headers
        response = await d.client.get(PATH, headers={"Origin": WEBAPP, **bearer(sign(claims()))})
        assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


def test_cors_origins_setting() -> None:
    assert load_settings({}).cors_origins == ()
    parsed = load_settings({"MANA_AI_CORS_ORIGINS": " https://Mana-AI.mana.how/ , http://localhost:5173,,"})
    assert parsed.cors_origins == ("https://mana-ai.mana.how", "http://localhost:5173")
    for bad in ("*", "mana-ai.mana.how", "https://mana.how/path", "ftp://x"):
        with pytest.raises(ConfigError, match="MANA_AI_CORS_ORIGINS"):
            load_settings({"MANA_AI_CORS_ORIGINS": bad})


# --- pure verification ----------------------------------------------------------------------


def test_verify_returns_claims_or_a_reason() -> None:
    jwks = parse_jwks({"keys": [K1.jwk(), {"kty": "RSA", "kid": "r", "n": "x", "e": "AQAB"},
                                {"kty": "OKP", "crv": "Ed25519", "x": "short", "kid": "bad"}]})
    assert [k.kid for k in jwks.keys] == ["k1"]
    now = time.time()
    issuers = {ISSUER}

    def check(token: str) -> Claims | JwtRejected:
        return verify(token, jwks, now, issuers, "mana")

    body = claims("u-9")
    assert check(sign(body)) == Claims("u-9", ISSUER, float(body["exp"]), "u1@example.com", "user", "s-1")
    assert check(sign(claims(), crit=["b64"])) == JwtRejected("malformed")
    assert check(sign(claims(exp="tomorrow"))) == JwtRejected("malformed")
    assert check(sign(claims(exp=True))) == JwtRejected("malformed")
    assert check(sign(claims(sub=42))) == JwtRejected("malformed")
    assert check(sign(claims(), Key("k9"))) == JwtRejected("unknown-key")
    assert check(sign(claims(), alg="none")) == JwtRejected("unsupported-alg")
    assert isinstance(check(sign(claims(), kid=None)), Claims)  # no kid: any published key may match
    assert check(sign(claims(nbf=now + 31))) == JwtRejected("not-yet-valid")
    assert check(sign(claims(exp=now - 31))) == JwtRejected("expired")
    assert check(sign(claims(aud=None))) == JwtRejected("wrong-audience")
    assert check(sign(claims(iss=None))) == JwtRejected("wrong-issuer")
    token = sign(claims())
    head, payload, sig = token.split(".")
    assert check(f"{head}.{payload}.{sig}=") == JwtRejected("malformed")  # padding is not base64url
    assert check(f"{head}.{payload}") == JwtRejected("malformed")
    tampered = b64url(json.dumps(claims("u-2")).encode())
    assert check(f"{head}.{tampered}.{sig}") == JwtRejected("bad-signature")


# --- what PyJWT guards, and the header we accept ----------------------------------------------


def signed(body: dict[str, Any], header: dict[str, Any], key: Key = K1) -> str:
    """A token with exactly this header, signed with `key` whatever `alg` says."""
    head = b64url(json.dumps(header).encode())
    payload = b64url(json.dumps(body).encode())
    return f"{head}.{payload}.{b64url(key.private.sign(f'{head}.{payload}'.encode()))}"


def hs256(body: dict[str, Any], secret: bytes) -> str:
    """alg confusion: HMAC keyed with what the verifier holds as the public key."""
    head = b64url(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(body).encode())
    mac = hmac.new(secret, f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return f"{head}.{payload}.{b64url(mac)}"


def unsigned(body: dict[str, Any], alg: str) -> str:
    return ".".join([b64url(json.dumps({"alg": alg, "kid": "k1", "typ": "JWT"}).encode()),
                     b64url(json.dumps(body).encode()), ""])


def hostile_tokens() -> list[tuple[str, str, RejectReason]]:
    public = K1.private.public_key()
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    pem = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    base = {"alg": "EdDSA", "kid": "k1"}
    return [
        ("alg none", unsigned(claims(), "none"), "unsupported-alg"),
        ("alg None", unsigned(claims(), "None"), "unsupported-alg"),
        ("HS256 keyed with the raw public key", hs256(claims(), raw), "unsupported-alg"),
        ("HS256 keyed with the JWK's x", hs256(claims(), K1.jwk()["x"].encode()), "unsupported-alg"),
        ("HS256 keyed with the PEM public key", hs256(claims(), pem), "unsupported-alg"),
        ("crit with an unknown extension", signed(claims(), {**base, "crit": ["urn:x"], "urn:x": 1}), "malformed"),
        ("crit naming a claim", signed(claims(), {**base, "crit": ["exp"], "exp": 1}), "malformed"),
        ("crit not a list", signed(claims(), {**base, "crit": "urn:x", "urn:x": 1}), "malformed"),
        ("crit empty", signed(claims(), {**base, "crit": []}), "malformed"),
        ("b64 false (a detached payload)", signed(claims(), {**base, "b64": False, "crit": ["b64"]}), "malformed"),
        ("typ of an access token", signed(claims(), {**base, "typ": "at+jwt"}), "wrong-type"),
        ("typ JOSE", signed(claims(), {**base, "typ": "JOSE"}), "wrong-type"),
        ("typ lower-case", signed(claims(), {**base, "typ": "jwt"}), "wrong-type"),
        ("typ null", signed(claims(), {**base, "typ": None}), "wrong-type"),
        ("kid a number", signed(claims(), {**base, "kid": 1}), "malformed"),
        ("aud with a non-string", sign(claims(aud=["mana", 5])), "wrong-audience"),
        ("jti a number", sign(claims(jti=5)), "malformed"),
    ]


def test_hostile_headers_and_claims_are_refused() -> None:
    jwks = parse_jwks({"keys": [K1.jwk()]})
    for name, token, reason in hostile_tokens():
        assert verify(token, jwks, time.time(), {ISSUER}, "mana") == JwtRejected(reason), name
    for header in ({"alg": "EdDSA", "kid": "k1"}, {"alg": "EdDSA", "kid": "k1", "typ": "JWT"}):  # typ absent or JWT
        assert isinstance(verify(signed(claims(), header), jwks, time.time(), {ISSUER}, "mana"), Claims), header


async def test_hostile_tokens_get_the_reference_401_and_header_refusals_fetch_no_keys(pool: asyncpg.Pool) -> None:
    async with running_auth(K1) as (auth, auth_url), audit_daemon(pool, auth_url) as d:
        for name, token, reason in hostile_tokens():
            response = await d.client.get(PATH, headers=bearer(token))
            assert (response.status_code, response.text) == (401, "Invalid or expired token"), name
            if reason in ("unsupported-alg", "wrong-type"):
                assert auth.fetches == 0, name  # refused on its header alone
        assert (await d.client.get(PATH, headers=bearer(sign(claims())))).status_code == 200
