"""Field values encrypted by the webapp: ``enc:1:<base64 iv>.<base64 ciphertext+tag>``.

AES-256-GCM, 12-byte IV, no AAD, the 16-byte tag appended to the ciphertext (WebCrypto's
layout); the plaintext is the UTF-8 ``JSON.stringify`` of the value. Values without the
prefix pass through ``decrypt_value`` unchanged.

Errors (raised by ``decrypt_value``/``decrypt_fields``; ``audit_reason`` names them for
``mana_ai.decrypt_audit``)::

    CipherError              base: an encrypted value could not be decrypted
    ├── CipherMalformed      not a well-formed blob, IV ≠ 12 bytes, or not UTF-8 JSON inside
    │                        → "ciphertext-malformed"
    └── CipherRejected       the GCM tag did not verify: tampered, or another key
                             → "ciphertext-tampered-or-wrong-key"
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "AUDIT_CIPHERTEXT_MALFORMED",
    "AUDIT_CIPHERTEXT_REJECTED",
    "AUDIT_DECRYPT_FAILED",
    "ENC_PREFIX",
    "IV_BYTES",
    "CipherError",
    "CipherMalformed",
    "CipherRejected",
    "DecryptedRecord",
    "audit_reason",
    "decrypt_fields",
    "decrypt_value",
    "encrypt_value",
    "is_encrypted",
]

ENC_PREFIX: Final = "enc:1:"
IV_BYTES: Final = 12
AUDIT_CIPHERTEXT_MALFORMED: Final = "ciphertext-malformed"
AUDIT_CIPHERTEXT_REJECTED: Final = "ciphertext-tampered-or-wrong-key"
AUDIT_DECRYPT_FAILED: Final = "decrypt-failed"


class CipherError(Exception):
    """mana-ai/crypto: an encrypted value could not be decrypted."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class CipherMalformed(CipherError):
    """mana-ai/crypto: malformed encrypted blob."""


class CipherRejected(CipherError):
    """mana-ai/crypto: authentication failed (ciphertext tampered with, or a different key)."""


@dataclass(frozen=True, slots=True)
class DecryptedRecord:
    """A record with its ``enc:1:`` fields decrypted; ``fields`` names them, sorted."""

    record: dict[str, object] = field(repr=False)  # decrypted user content: keep it out of logs
    fields: tuple[str, ...]


def is_encrypted(value: object) -> bool:
    return isinstance(value, str) and value.startswith(ENC_PREFIX)


def decrypt_value(mdk: bytes, value: object) -> object:
    """The JSON value inside an ``enc:1:`` string; any other value is returned as it is."""
    if not isinstance(value, str) or not value.startswith(ENC_PREFIX):
        return value
    body = value[len(ENC_PREFIX) :]
    iv_b64, dot, ct_b64 = body.partition(".")  # the FIRST "."
    if not dot:
        raise CipherMalformed("mana-ai/crypto: malformed encrypted blob (missing iv/ct separator)")
    iv = _b64decode(iv_b64, "iv")
    if len(iv) != IV_BYTES:
        raise CipherMalformed(f"mana-ai/crypto: expected 12-byte IV, got {len(iv)}")
    ciphertext = _b64decode(ct_b64, "ciphertext")
    try:
        plaintext = AESGCM(mdk).decrypt(iv, ciphertext, None)
    except InvalidTag as exc:
        raise CipherRejected() from exc
    try:
        # TextDecoder drops a leading BOM; a byte sequence that is not UTF-8 is malformed here
        return json.loads(plaintext.decode("utf-8-sig"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise CipherMalformed("mana-ai/crypto: malformed encrypted blob (plaintext is not UTF-8 JSON)") from exc


def encrypt_value(mdk: bytes, value: object, iv: bytes) -> str:
    """The webapp's ``encryptValue`` with a given IV (tests only: never reuse an IV for a key)."""
    if len(iv) != IV_BYTES:
        raise ValueError(f"mana-ai/crypto: expected 12-byte IV, got {len(iv)}")
    plaintext = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    ciphertext = AESGCM(mdk).encrypt(iv, plaintext.encode("utf-8"), None)
    return f"{ENC_PREFIX}{base64.b64encode(iv).decode('ascii')}.{base64.b64encode(ciphertext).decode('ascii')}"


def decrypt_fields(mdk: bytes, record: Mapping[str, object]) -> DecryptedRecord:
    """A copy of ``record`` with every top-level ``enc:1:`` field decrypted.

    Fields are decrypted in the record's order and the first failure is raised, as in the
    TypeScript service's ``decryptRecordFields``; ``record`` itself is not modified.
    """
    out = dict(record)
    done: list[str] = []
    for name, value in record.items():
        if is_encrypted(value):
            out[name] = decrypt_value(mdk, value)
            done.append(name)
    return DecryptedRecord(out, tuple(sorted(done)))


def audit_reason(exc: BaseException) -> str:
    """The ``decrypt_audit.reason`` for a failed decryption."""
    if isinstance(exc, CipherMalformed):
        return AUDIT_CIPHERTEXT_MALFORMED
    if isinstance(exc, CipherRejected):
        return AUDIT_CIPHERTEXT_REJECTED
    return AUDIT_DECRYPT_FAILED


def _b64decode(text: str, part: str) -> bytes:
    """Standard base64 with padding, nothing else (no whitespace, no URL alphabet)."""
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise CipherMalformed(f"mana-ai/crypto: malformed encrypted blob ({part} is not base64)") from exc


def _reject_constant(name: str) -> object:
    raise ValueError(f"JSON.parse does not accept {name}")
