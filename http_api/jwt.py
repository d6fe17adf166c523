"""EdDSA (Ed25519) JWTs, verified with PyJWT against mana-auth's JWKS.

What shared-hono's `authMiddleware` asks of jose's `jwtVerify`:

* `verify(token, jwks, now, issuers, audience) -> Claims | JwtRejected` is pure (time is `now`).
  PyJWT checks the compact JWS: base64url and JSON, `kid` a string, `crit` only with extensions
  it implements, `alg` exactly `EdDSA` and that of the key (`PyJWK` from the JWKS, so never
  `none`, never HS256 keyed with the public key), the signature; then the issuer allow-list, the
  audience (`aud` a string or a list of strings) and the types of `sub` and `jti`. Ours, around
  it: `typ` absent or `JWT` (no other kind of JWS signed by mana-auth is taken for a session
  token), the key found by `kid` (any published key for no `kid`, like jose), `exp` required
  (unlike jose: Better Auth always sets it), `exp`/`nbf` against `now` with `LEEWAY_S`, and last
  `sub` (the TypeScript service reports a missing subject only for an otherwise valid token).
* `JwksCache` fetches `{MANA_AUTH_URL}/api/v1/auth/jwks` through an injected httpx client: every
  fetch is bounded, the key set is kept `max_age_s`, an unknown `kid` forces one refresh at most
  every `refresh_cooldown_s`, and concurrent callers share one fetch (and its failure). A failed
  fetch is remembered for `refresh_cooldown_s` too: until then, callers that would fetch get
  the same failure without a new fetch.
* `authenticate(...)` puts the two together; a JWKS that cannot be fetched is a rejection
  (`jwks-unavailable`, the request gets a 401), logged once per failed fetch.

Errors::

    AuthError
     └─ JwksUnavailable   the key set could not be fetched or read; see __cause__
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import jwt
import trio
from jwt.types import Options

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
ALGORITHMS = ["EdDSA"]
# PyJWT checks time claims against its own clock, not a given `now`: `_check` does them
_OPTIONS: Options = {"verify_exp": False, "verify_nbf": False, "verify_iat": False, "require": ["exp"]}

RejectReason = Literal[
    "malformed", "unsupported-alg", "wrong-type", "unknown-key", "bad-signature", "no-expiry", "expired",
    "not-yet-valid", "wrong-issuer", "wrong-audience", "missing-subject", "jwks-unavailable",
]
_MISSING: dict[str, RejectReason] = {"exp": "no-expiry", "iss": "wrong-issuer", "aud": "wrong-audience"}


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
    key: jwt.PyJWK  # bound to EdDSA: PyJWT verifies with no other algorithm


@dataclass(frozen=True)
class Jwks:
    keys: tuple[Jwk, ...] = ()

    def knows(self, kid: str | None) -> bool:
        return kid is None or any(k.kid == kid for k in self.keys)

    def candidates(self, kid: str | None) -> list[jwt.PyJWK]:
        """The keys a token with this `kid` may be signed with (all of them for no `kid`, like jose)."""
        return [k.key for k in self.keys if kid is None or k.kid == kid]


def jwks_url(auth_url: str | None) -> str:
    return f"{(auth_url or DEFAULT_AUTH_URL).rstrip('/')}/api/v1/auth/jwks"


def allowed_issuers(jwt_issuer: str | None, auth_url: str | None) -> frozenset[str]:
    """`JWT_ISSUER` (if set), `MANA_AUTH_URL` (if set) and the built-in two, as the TypeScript service accepts."""
    return frozenset(i for i in (jwt_issuer, auth_url, *BUILTIN_ISSUERS) if i)


# --- pure: verification ---------------------------------------------------------------------


class _Jws(jwt.PyJWS):
    """PyJWS, except that `"kid": null` reads as no kid, as jose (in the TypeScript service) reads it; PyJWT
    refuses it. The one override of a PyJWT internal: re-check it on each upgrade (the test
    `test_verify_returns_claims_or_a_reason` fails if it stops working)."""

    def _validate_kid(self, kid: Any) -> None:
        if kid is not None:
            super()._validate_kid(kid)


_JWS = _Jws(ALGORITHMS)  # knows EdDSA only; stateless, like the decoder below: one serves every request


class _Jwt(jwt.PyJWT):
    """PyJWT on `_JWS` (PyJWT pairs its own module-level decoders the same way)."""

    def __init__(self) -> None:
        super().__init__(_OPTIONS)
        self._jws = _JWS


_JWT = _Jwt()


def _header(token: str) -> dict[str, Any] | JwtRejected:
    """The unverified header, if the token is worth a key lookup at all."""
    if len(token) > MAX_TOKEN_CHARS:
        return JwtRejected("malformed")
    try:
        header = _JWS.get_unverified_header(token)  # also refuses a non-string kid and unknown `crit`
    except jwt.InvalidTokenError:
        return JwtRejected("malformed")
    if header.get("alg") not in ALGORITHMS:
        return JwtRejected("unsupported-alg")  # PyJWT refuses it too; this spares a JWKS fetch
    if header.get("typ", "JWT") != "JWT":
        return JwtRejected("wrong-type")
    return header


def _decode(token: str, keys: list[jwt.PyJWK], issuers: Collection[str],
            audience: str) -> dict[str, Any] | JwtRejected:
    if not keys:
        return JwtRejected("unknown-key")
    for key in keys:
        try:
            return _JWT.decode(token, key, algorithms=ALGORITHMS, audience=audience, issuer=issuers)
        except jwt.InvalidSignatureError:
            continue  # another published key may have signed it
        except jwt.MissingRequiredClaimError as exc:
            return JwtRejected(_MISSING.get(exc.claim, "malformed"))
        except jwt.InvalidAlgorithmError:
            return JwtRejected("unsupported-alg")
        except jwt.InvalidIssuerError:
            return JwtRejected("wrong-issuer")
        except jwt.InvalidAudienceError:
            return JwtRejected("wrong-audience")
        except jwt.InvalidTokenError:  # undecodable, `sub` or `jti` not a string, ...
            return JwtRejected("malformed")
    return JwtRejected("bad-signature")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _check(token: str, keys: list[jwt.PyJWK], now: float, issuers: Collection[str],
           audience: str) -> Claims | JwtRejected:
    claims = _decode(token, keys, issuers, audience)
    if isinstance(claims, JwtRejected):
        return claims
    if any(name in claims and _number(claims[name]) is None for name in ("exp", "nbf", "iat")):
        return JwtRejected("malformed")  # PyJWT would take `true` for 1 and a float for its int
    exp = float(claims["exp"])
    if exp <= now - LEEWAY_S:
        return JwtRejected("expired")
    nbf = _number(claims.get("nbf"))
    if nbf is not None and nbf > now + LEEWAY_S:
        return JwtRejected("not-yet-valid")
    subject = claims.get("sub")
    if not subject:  # absent or "" (a non-string was refused by PyJWT)
        return JwtRejected("missing-subject")
    return Claims(subject, claims["iss"], exp, _optional_str(claims.get("email")),
                  _optional_str(claims.get("role")), _optional_str(claims.get("sid")))


def verify(token: str, jwks: Jwks, now: float, issuers: Collection[str], audience: str) -> Claims | JwtRejected:
    """Verify a compact EdDSA JWS and its claims at `now` (Unix seconds)."""
    header = _header(token)
    if isinstance(header, JwtRejected):
        return header
    return _check(token, jwks.candidates(header.get("kid")), now, issuers, audience)


def parse_jwks(document: object) -> Jwks:
    """The Ed25519 signing keys of a JWKS document; other keys are skipped. ValueError if no key set."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set")
    keys = []
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
            continue
        if entry.get("alg", "EdDSA") != "EdDSA" or entry.get("use", "sig") != "sig" or "d" in entry:
            continue  # not for signatures, or private key material a JWKS must not carry
        kid = entry.get("kid")
        if not (kid is None or isinstance(kid, str)):
            continue
        try:
            keys.append(Jwk(kid, jwt.PyJWK(entry, algorithm="EdDSA")))
        except (jwt.PyJWTError, ValueError, TypeError):  # no or a bad `x`
            continue
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
        self._failed_at = -math.inf

    @property
    def fetches(self) -> int:
        return self._fetches

    async def keys_for(self, kid: str | None) -> Jwks:
        """A key set fresh enough for a token with this `kid`; raises JwksUnavailable."""
        now = self._clock()
        age = now - self._fetched_at
        if self._jwks is not None and age < self._max_age_s:
            if self._jwks.knows(kid) or age < self._cooldown_s:
                return self._jwks  # an unknown kid right after a fetch: no new fetch (hammering)
        if self._failure is not None and now - self._failed_at < self._cooldown_s:
            # a fetch failed moments ago: the same answer, without a new fetch or a new warning
            raise JwksUnavailable(str(self._failure)) from self._failure
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
                self._failure, self._failed_at = exc, self._clock()
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
    header = _header(token)
    if isinstance(header, JwtRejected):
        return header
    kid = header.get("kid")
    try:
        keys = await jwks.keys_for(kid)
    except JwksUnavailable:
        return JwtRejected("jwks-unavailable")  # logged by the cache, once per failed fetch
    return _check(token, keys.candidates(kid), now, issuers, audience)
