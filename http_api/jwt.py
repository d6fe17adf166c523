"""EdDSA (Ed25519) JWTs, verified against mana-auth's JWKS (reference §1.4, contracts §4.3).

What shared-hono's `authMiddleware` asks of jose's `jwtVerify`, with `cryptography` only:

* `verify(token, jwks, now, issuers, audience) -> Claims | JwtRejected` is pure. It accepts only
  a compact JWS with `alg` = `EdDSA` (never `none`, never a key from the token itself), finds the
  key by `kid`, checks the signature over `header.payload`, then `exp` (required here, unlike
  jose: Better Auth always sets it) and `nbf` with `LEEWAY_S`, the issuer allow-list, the
  audience (`aud` a string or a list), and last `sub` (the reference reports a missing subject
  only for an otherwise valid token).
* `JwksCache` fetches `{MANA_AUTH_URL}/api/v1/auth/jwks` through an injected httpx client: every
  fetch is bounded, the key set is kept `max_age_s`, an unknown `kid` forces one refresh at most
  every `refresh_cooldown_s`, and concurrent callers share one fetch (and its failure).
* `authenticate(...)` puts the two together; a JWKS that cannot be fetched is a rejection
  (`jwks-unavailable`, the request gets a 401), logged once per failed fetch.

Errors::

    AuthError
     └─ JwksUnavailable   the key set could not be fetched or read; see __cause__
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import trio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "AuthError",
    "Claims",
    "DEFAULT_AUTH_URL",
    "Jwk",
    "Jwks",
    "JwksCache",
    "JwksUnavailable",
    "JwtRejected",
    "LEEWAY_S",
    "RejectReason",
    "allowed_issuers",
    "authenticate",
    "jwks_url",
    "open_jwks_cache",
    "parse_jwks",
    "verify",
]

log = logging.getLogger(__name__)

DEFAULT_AUTH_URL = "http://localhost:3001"
#: issuers accepted besides `JWT_ISSUER` and `MANA_AUTH_URL` (shared-hono's list)
BUILTIN_ISSUERS = ("https://auth.mana.how", "http://localhost:3001")
LEEWAY_S = 30.0
JWKS_TIMEOUT_S = 5.0
JWKS_MAX_AGE_S = 300.0
JWKS_REFRESH_COOLDOWN_S = 30.0
MAX_TOKEN_CHARS = 8192  # Better Auth's tokens are a few hundred characters

RejectReason = Literal[
    "malformed", "unsupported-alg", "unknown-key", "bad-signature", "no-expiry", "expired",
    "not-yet-valid", "wrong-issuer", "wrong-audience", "missing-subject", "jwks-unavailable",
]


class AuthError(Exception):
    """Authentication could not be carried out."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class JwksUnavailable(AuthError):
    """mana-auth's JWKS could not be fetched or read; see __cause__."""


@dataclass(frozen=True)
class Claims:
    """A verified token: `subject` is the user id."""

    subject: str
    issuer: str
    expires_at: float
    email: str | None = None
    role: str | None = None
    session_id: str | None = None


@dataclass(frozen=True)
class JwtRejected:
    reason: RejectReason


@dataclass(frozen=True)
class Jwk:
    kid: str | None
    key: Ed25519PublicKey


@dataclass(frozen=True)
class Jwks:
    keys: tuple[Jwk, ...] = ()

    def knows(self, kid: str | None) -> bool:
        return kid is None or any(k.kid == kid for k in self.keys)

    def candidates(self, kid: str | None) -> list[Ed25519PublicKey]:
        """The keys a token with this `kid` may be signed with (all of them for no `kid`, like jose)."""
        return [k.key for k in self.keys if kid is None or k.kid == kid]


def jwks_url(auth_url: str | None) -> str:
    return f"{(auth_url or DEFAULT_AUTH_URL).rstrip('/')}/api/v1/auth/jwks"


def allowed_issuers(jwt_issuer: str | None, auth_url: str | None) -> frozenset[str]:
    """`JWT_ISSUER` (if set), `MANA_AUTH_URL` (if set) and the built-in two (reference §1.4)."""
    return frozenset(i for i in (jwt_issuer, auth_url, *BUILTIN_ISSUERS) if i)


# --- pure: parsing and verification ---------------------------------------------------------

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _b64url(segment: str) -> bytes:
    if not _B64URL.fullmatch(segment):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


@dataclass(frozen=True)
class _Jws:
    kid: str | None
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _parse(token: str) -> _Jws | JwtRejected:
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        return JwtRejected("malformed")
    head, body, sig = token.split(".")
    try:
        header = _json_object(_b64url(head))
        payload = _json_object(_b64url(body))
        signature = _b64url(sig)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return JwtRejected("malformed")
    if header.get("alg") != "EdDSA":
        return JwtRejected("unsupported-alg")  # `none`, HS256 with the public key, RS256, ...
    kid = header.get("kid")
    if "crit" in header or not (kid is None or isinstance(kid, str)):
        return JwtRejected("malformed")  # we understand no critical extension (RFC 7515 §4.1.11)
    return _Jws(kid, payload, f"{head}.{body}".encode("ascii"), signature)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _check(jws: _Jws, jwks: Jwks, now: float, issuers: Collection[str], audience: str) -> Claims | JwtRejected:
    keys = jwks.candidates(jws.kid)
    if not keys:
        return JwtRejected("unknown-key")
    if len(jws.signature) != 64 or not any(_signed_by(key, jws) for key in keys):
        return JwtRejected("bad-signature")
    claims = jws.payload
    for name in ("exp", "nbf", "iat"):
        if name in claims and _number(claims[name]) is None:
            return JwtRejected("malformed")
    exp = _number(claims.get("exp"))
    if exp is None:
        return JwtRejected("no-expiry")
    if exp <= now - LEEWAY_S:
        return JwtRejected("expired")
    nbf = _number(claims.get("nbf"))
    if nbf is not None and nbf > now + LEEWAY_S:
        return JwtRejected("not-yet-valid")
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or issuer not in issuers:
        return JwtRejected("wrong-issuer")
    aud = claims.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        return JwtRejected("wrong-audience")
    subject = claims.get("sub")
    if subject is None or subject == "":
        return JwtRejected("missing-subject")
    if not isinstance(subject, str):
        return JwtRejected("malformed")
    return Claims(subject, issuer, exp, _optional_str(claims.get("email")), _optional_str(claims.get("role")),
                  _optional_str(claims.get("sid")))


def _signed_by(key: Ed25519PublicKey, jws: _Jws) -> bool:
    try:
        key.verify(jws.signature, jws.signing_input)
    except InvalidSignature:
        return False
    return True


def verify(token: str, jwks: Jwks, now: float, issuers: Collection[str], audience: str) -> Claims | JwtRejected:
    """Verify a compact EdDSA JWS and its claims at `now` (Unix seconds)."""
    jws = _parse(token)
    if isinstance(jws, JwtRejected):
        return jws
    return _check(jws, jwks, now, issuers, audience)


def parse_jwks(document: object) -> Jwks:
    """The Ed25519 signing keys of a JWKS document; other keys are skipped. ValueError if no key set."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set")
    keys = []
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        if jwk.get("alg", "EdDSA") != "EdDSA" or jwk.get("use", "sig") != "sig":
            continue
        kid, x = jwk.get("kid"), jwk.get("x")
        if not isinstance(x, str) or not (kid is None or isinstance(kid, str)):
            continue
        try:
            raw = _b64url(x)
        except (ValueError, binascii.Error):
            continue
        if len(raw) == 32:
            keys.append(Jwk(kid, Ed25519PublicKey.from_public_bytes(raw)))
    return Jwks(tuple(keys))


# --- effectful: the cached key set ----------------------------------------------------------


class JwksCache:
    """mana-auth's key set, fetched on demand and shared by all requests."""

    def __init__(self, client: httpx.AsyncClient, url: str, *, timeout_s: float = JWKS_TIMEOUT_S,
                 max_age_s: float = JWKS_MAX_AGE_S, refresh_cooldown_s: float = JWKS_REFRESH_COOLDOWN_S,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self.url = url
        self._client = client
        self._timeout_s = timeout_s
        self._max_age_s = max_age_s
        self._cooldown_s = refresh_cooldown_s
        self._clock = clock
        self._lock = trio.Lock()
        self._jwks: Jwks | None = None
        self._fetched_at = -math.inf
        self._fetches = 0  # completed fetches, failed ones included
        self._failure: JwksUnavailable | None = None  # the outcome of the last fetch, if it failed

    @property
    def fetches(self) -> int:
        return self._fetches

    async def keys_for(self, kid: str | None) -> Jwks:
        """A key set fresh enough for a token with this `kid`; raises JwksUnavailable."""
        age = self._clock() - self._fetched_at
        if self._jwks is not None and age < self._max_age_s:
            if self._jwks.knows(kid) or age < self._cooldown_s:
                return self._jwks  # an unknown kid right after a fetch: no new fetch (hammering)
        return await self._refresh(self._fetches)

    async def _refresh(self, seen: int) -> Jwks:
        async with self._lock:
            if self._fetches != seen:  # a fetch ended while we waited for the lock: share its outcome
                if self._failure is not None:
                    raise JwksUnavailable(str(self._failure)) from self._failure
                if self._jwks is not None:
                    return self._jwks
            try:
                jwks = await self._fetch()
            except JwksUnavailable as exc:
                self._failure = exc
                log.warning("auth.jwks_unavailable", extra={"url": self.url, "error": str(exc)})
                raise
            finally:
                self._fetches += 1
            self._jwks, self._fetched_at, self._failure = jwks, self._clock(), None
            log.debug("auth.jwks_fetched", extra={"url": self.url, "keys": len(jwks.keys)})
            return jwks

    async def _fetch(self) -> Jwks:
        try:
            with trio.fail_after(self._timeout_s):
                response = await self._client.get(self.url, headers={"Accept": "application/json"},
                                                   timeout=self._timeout_s)
        except (httpx.HTTPError, trio.TooSlowError) as exc:
            raise JwksUnavailable(f"JWKS fetch failed: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise JwksUnavailable(f"JWKS fetch answered {response.status_code}")
        try:
            return parse_jwks(response.json())
        except (ValueError, UnicodeDecodeError) as exc:
            raise JwksUnavailable("JWKS response is not a JWK set") from exc


@asynccontextmanager
async def open_jwks_cache(auth_url: str | None, **options: Any) -> AsyncIterator[JwksCache]:
    """A `JwksCache` for `{auth_url or DEFAULT_AUTH_URL}/api/v1/auth/jwks` with its own small client."""
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(JWKS_TIMEOUT_S), limits=limits) as client:
        yield JwksCache(client, jwks_url(auth_url), **options)


async def authenticate(token: str, jwks: JwksCache, *, now: float, issuers: Collection[str],
                       audience: str) -> Claims | JwtRejected:
    """`verify` with keys from the cache; a token that cannot be parsed fetches nothing."""
    jws = _parse(token)
    if isinstance(jws, JwtRejected):
        return jws
    try:
        keys = await jwks.keys_for(jws.kid)
    except JwksUnavailable:
        return JwtRejected("jwks-unavailable")  # logged by the cache, once per failed fetch
    return _check(jws, keys, now, issuers, audience)
