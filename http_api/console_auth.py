"""The console's sessions, CSRF tokens and login rate limit (pure: time is passed in).

A session is a signed cookie value `<issued>.<expires>.<nonce>.<mac>`: HMAC-SHA256 under a key
derived from the service key, so changing `MANA_SERVICE_KEY` ends every session. The CSRF token
of a session is a MAC of its nonce under the same key. Logging out revokes the nonce in this
instance until the session would have expired anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass

SESSION_TTL_S = 12 * 3600.0
_CLOCK_SKEW_S = 60.0
_MAX_REVOKED = 10_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Session:
    nonce: str
    expires_at: float  # unix time


class SessionSigner:
    """Issues and checks session cookie values; owns the revoked nonces of this instance."""

    def __init__(self, service_key: str, *, ttl_s: float = SESSION_TTL_S) -> None:
        # a key of its own, derived from the service key: the cookie never carries the key itself
        self._key = hmac.new(service_key.encode("utf-8"), b"mana-ai console session v1", hashlib.sha256).digest()
        self._ttl_s = ttl_s
        self._revoked: dict[str, float] = {}  # nonce -> when its session expires

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    def issue(self, now: float) -> tuple[str, Session]:
        """A new session: the cookie value and what it stands for."""
        issued, expires = int(now), int(now + self._ttl_s)
        nonce = secrets.token_urlsafe(18)
        body = f"{issued}.{expires}.{nonce}"
        return f"{body}.{self._mac('session', body)}", Session(nonce, float(expires))

    def verify(self, value: str | None, now: float) -> Session | None:
        """The session a cookie value stands for, or None (absent, forged, expired, revoked)."""
        if not value or len(value) > 200:
            return None
        parts = value.split(".")
        if len(parts) != 4:
            return None
        issued_s, expires_s, nonce, mac = parts
        body = f"{issued_s}.{expires_s}.{nonce}"
        if not hmac.compare_digest(mac.encode("ascii", "replace"), self._mac("session", body).encode("ascii")):
            return None
        issued, expires = int(issued_s), int(expires_s)  # ours: the MAC matched
        if not issued - _CLOCK_SKEW_S <= now < expires or nonce in self._revoked:
            return None
        return Session(nonce, float(expires))

    def revoke(self, session: Session, now: float) -> None:
        """End a session in this instance (logout)."""
        self._revoked = {n: exp for n, exp in self._revoked.items() if exp > now}
        if len(self._revoked) < _MAX_REVOKED:
            self._revoked[session.nonce] = session.expires_at

    def csrf_token(self, session: Session) -> str:
        return self._mac("csrf", session.nonce)

    def csrf_ok(self, session: Session, presented: str | None) -> bool:
        if not presented:
            return False
        return hmac.compare_digest(presented.encode("ascii", "replace"), self.csrf_token(session).encode("ascii"))

    def _mac(self, purpose: str, message: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}:{message}".encode("utf-8"), hashlib.sha256).digest())


class LoginLimiter:
    """At most `max_failures` failed logins per client within `window_s`; then refused until the
    oldest of them is `window_s` old. Tracks at most `max_clients` clients (the oldest go first).
    A login `reserve`s its attempt before it reads the form: an attempt still in progress counts."""

    def __init__(self, *, max_failures: int = 5, window_s: float = 60.0, max_clients: int = 10_000) -> None:
        self._max_failures = max_failures
        self._window_s = window_s
        self._max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str, now: float) -> float:
        """Seconds before `client` may try again; 0 when it may now."""
        failures = self._failures.get(client)
        if failures is None or len(failures) < self._max_failures:
            return 0.0
        return max(0.0, failures[0] + self._window_s - now)

    def reserve(self, client: str, now: float) -> float:
        """Take one attempt for `client` before anything else happens: 0 when it may try now (the
        attempt counts as failed from this moment on, until `succeeded` clears the client's
        record), else the seconds before it may try again (and nothing is counted). Requests in
        parallel are limited as requests one after another are."""
        wait = self.retry_after(client, now)
        if wait == 0:
            self.failed(client, now)
        return wait

    def failed(self, client: str, now: float) -> None:
        failures = self._failures.get(client)
        if failures is None:
            while len(self._failures) >= self._max_clients:
                self._failures.popitem(last=False)
            failures = self._failures[client] = deque(maxlen=self._max_failures)
        failures.append(now)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
