"""Loading the mission private key, also when an env file flattened its newlines to literal ``\\n``.

``load_private_key(pem)`` never raises: it returns a ``MissionKey`` or a ``KeyProblem`` whose
``message`` is safe to log (it names what is wrong, never any key material). The runtime
(``runtime.load_mission_key``) loads the key once at start; a problem disables grants (every
unwrap is ``not-configured``).

PEM handling follows the TypeScript service: every ``-----BEGIN …-----``/``-----END …-----``
marker and all whitespace are stripped and the rest is base64-decoded to DER, which must be
PKCS#8 (what WebCrypto's ``importKey("pkcs8", …)`` takes) holding an RSA key. Unlike the
TypeScript service (where such a key silently disabled grants), the two-character escapes
``\\n`` and ``\\r`` (newlines flattened by an env file) are dropped too; base64 never contains a
backslash, so nothing valid is lost.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_private_key

__all__ = ["KeyProblem", "MissionKey", "load_private_key"]

_MARKER = re.compile(r"-----(?:BEGIN|END) [^-]*-----")
_ESCAPED_NEWLINE = re.compile(r"\\[rn]")
_WHITESPACE = re.compile(r"\s+")

_MESSAGES: Final = {
    "not-configured": "no mission private key configured; key grants are disabled",
    "not-base64": "the mission private key is not a PEM: its body is not valid base64",
    "not-pkcs8": "the mission private key is not an unencrypted PKCS#8 key (-----BEGIN PRIVATE KEY-----)",
    "unreadable": "the mission private key could not be parsed as a PKCS#8 private key",
    "not-rsa": "the mission private key is not an RSA key",
}


@dataclass(frozen=True, slots=True)
class MissionKey:
    """The RSA private key that unwraps mission grants (RSA-OAEP, SHA-256 / MGF1-SHA-256)."""

    private_key: rsa.RSAPrivateKey = field(repr=False)

    @property
    def key_size(self) -> int:
        return self.private_key.key_size


@dataclass(frozen=True, slots=True)
class KeyProblem:
    """Why no key could be loaded; ``message`` defaults to a text for ``reason``."""

    reason: str  # not-configured | not-base64 | not-pkcs8 | unreadable | not-rsa
    message: str = ""

    def __post_init__(self) -> None:
        if not self.message:
            object.__setattr__(self, "message", _MESSAGES.get(self.reason, self.reason))


def load_private_key(pem: str | None) -> MissionKey | KeyProblem:
    if pem is None or not pem.strip():
        return KeyProblem("not-configured")
    body = _WHITESPACE.sub("", _ESCAPED_NEWLINE.sub("", _MARKER.sub("", pem)))
    try:
        der = binascii.a2b_base64(body.encode("ascii"), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error):
        return KeyProblem("not-base64")
    if not der:
        return KeyProblem("not-base64")
    if not _is_plain_pkcs8(der):
        return KeyProblem("not-pkcs8")
    try:
        key = load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return KeyProblem("unreadable")
    if not isinstance(key, rsa.RSAPrivateKey):
        return KeyProblem("not-rsa", f"the mission private key is a {type(key).__name__}, expected an RSA key")
    return MissionKey(key)


def _is_plain_pkcs8(der: bytes) -> bool:
    """``SEQUENCE { INTEGER version, SEQUENCE algorithm, … }``: PrivateKeyInfo / OneAsymmetricKey.

    ``load_der_private_key`` also takes PKCS#1 ``RSAPrivateKey`` (``SEQUENCE { INTEGER,
    INTEGER n, … }``) and traditional EC/DSA DER, which WebCrypto's PKCS#8 import rejects, and
    an ``EncryptedPrivateKeyInfo`` starts with a SEQUENCE, not the version INTEGER.
    """
    if len(der) < 2 or der[0] != 0x30:
        return False
    pos = _skip_length(der, 1)
    if pos is None or pos + 3 > len(der) or der[pos] != 0x02:  # version INTEGER
        return False
    version_len = der[pos + 1]
    if version_len > 0x7F:
        return False
    after_version = pos + 2 + version_len
    return after_version < len(der) and der[after_version] == 0x30  # AlgorithmIdentifier


def _skip_length(der: bytes, pos: int) -> int | None:
    """The position after a DER length field starting at ``pos``."""
    if pos >= len(der):
        return None
    first = der[pos]
    if first < 0x80:
        return pos + 1
    count = first & 0x7F
    if count == 0 or count > 4:
        return None
    return pos + 1 + count
