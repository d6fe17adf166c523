"""Mission Data Key derivation and grant minting, as mana-auth does it.

The daemon never derives an MDK (it unwraps one); this module exists so tests and tools can
mint grants byte-compatible with mana-auth. Invalid arguments are programmer errors and raise
``ValueError`` with the shared-ai messages.

    MDK = HKDF-SHA256(IKM = 32-byte master key, salt = UTF-8(missionId),
                      info = UTF-8(canonical_info_string(derivation)), L = 32)
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "DERIVATION_VERSION",
    "MASTER_KEY_BYTES",
    "MDK_BYTES",
    "Derivation",
    "canonical_info_string",
    "derive_mdk",
    "js_sorted",
    "mint_grant",
    "oaep_sha256",
]

DERIVATION_VERSION: Final = "v1"
MASTER_KEY_BYTES: Final = 32
MDK_BYTES: Final = 32
_INFO_PREFIX: Final = "mana-ai-mission-grant"


@dataclass(frozen=True, slots=True)
class Derivation:
    """``grant.derivation``: which mission and records an MDK is scoped to."""

    mission_id: str
    tables: tuple[str, ...]
    record_ids: tuple[str, ...]  # "<table>:<id>"
    version: str = DERIVATION_VERSION

    def to_json(self) -> dict[str, object]:
        """The wire shape mana-auth returns (tables and record ids sorted)."""
        return {
            "version": self.version,
            "missionId": self.mission_id,
            "tables": js_sorted(self.tables),
            "recordIds": js_sorted(self.record_ids),
        }


def oaep_sha256() -> padding.OAEP:
    """WebCrypto's ``{name: "RSA-OAEP", hash: "SHA-256"}``: MGF1 uses SHA-256 too, no label."""
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def js_sorted(values: Iterable[str]) -> list[str]:
    """``Array.prototype.sort()`` on strings: UTF-16 code-unit order (= ``sorted`` for the BMP)."""
    return sorted(values, key=lambda s: s.encode("utf-16-be", "surrogatepass"))


def canonical_info_string(derivation: Derivation) -> str:
    """``mana-ai-mission-grant:<version>:tables=<sorted,joined>:ids=<sorted,joined>``."""
    return (
        f"{_INFO_PREFIX}:{derivation.version}"
        f":tables={','.join(js_sorted(derivation.tables))}"
        f":ids={','.join(js_sorted(derivation.record_ids))}"
    )


def derive_mdk(master_key: bytes, derivation: Derivation) -> bytes:
    if len(master_key) != MASTER_KEY_BYTES:
        raise ValueError(f"shared-ai/grant: expected 32-byte master key, got {len(master_key)}")
    if derivation.version != DERIVATION_VERSION:
        raise ValueError(f"shared-ai/grant: unsupported derivation version {derivation.version}, expected v1")
    hkdf = HKDF(  # single-use (a second derive() raises AlreadyFinalized): a fresh object per derivation
        algorithm=hashes.SHA256(),
        length=MDK_BYTES,
        salt=_utf8(derivation.mission_id),
        info=_utf8(canonical_info_string(derivation)),
    )
    return hkdf.derive(master_key)


def mint_grant(
    public_key: rsa.RSAPublicKey,
    master_key: bytes,
    derivation: Derivation,
    *,
    issued_at: datetime,
    expires_at: datetime,
) -> dict[str, object]:
    """A grant as ``POST /api/v1/me/ai-mission-grant`` returns it (wrapped with OAEP-SHA-256)."""
    wrapped = public_key.encrypt(derive_mdk(master_key, derivation), oaep_sha256())
    return {
        "wrappedKey": base64.b64encode(wrapped).decode("ascii"),
        "derivation": derivation.to_json(),
        "issuedAt": _iso_ms(issued_at),
        "expiresAt": _iso_ms(expires_at),
    }


def _utf8(text: str) -> bytes:
    """``TextEncoder().encode``: surrogate pairs joined, lone surrogates become U+FFFD."""
    return text.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "replace").encode("utf-8")


def _iso_ms(dt: datetime) -> str:
    """``Date.prototype.toISOString()`` for an aware datetime (milliseconds truncated)."""
    if dt.utcoffset() is None:
        raise ValueError("grant timestamps need an aware datetime, got a naive one")
    utc = dt.astimezone(UTC)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
        f".{utc.microsecond // 1000:03d}Z"
    )
