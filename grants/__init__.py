"""Mission key grants and field decryption, compatible with mana-auth and the webapp: pure, no
I/O, no clock, no logging.

* ``keys``    load the RSA private key from a PEM (``MissionKey`` | ``KeyProblem``)
* ``unwrap``  check and unwrap a mission's grant (``Unwrapped`` | ``GrantRefused``)
* ``cipher``  ``enc:1:`` AES-GCM field values (errors: ``CipherError`` and subclasses)
* ``derive``  HKDF MDK derivation and grant minting, as mana-auth does it (tests, tools)
"""

from __future__ import annotations

from grants.cipher import (
    AUDIT_CIPHERTEXT_MALFORMED,
    AUDIT_CIPHERTEXT_REJECTED,
    AUDIT_DECRYPT_FAILED,
    ENC_PREFIX,
    IV_BYTES,
    CipherError,
    CipherMalformed,
    CipherRejected,
    DecryptedRecord,
    audit_reason,
    decrypt_fields,
    decrypt_value,
    encrypt_value,
    is_encrypted,
)
from grants.derive import (
    DERIVATION_VERSION,
    MASTER_KEY_BYTES,
    MDK_BYTES,
    Derivation,
    canonical_info_string,
    derive_mdk,
    js_sorted,
    mint_grant,
    oaep_sha256,
)
from grants.keys import KeyProblem, MissionKey, load_private_key
from grants.unwrap import (
    ALL_SKIP_REASONS,
    EXPIRED,
    MALFORMED,
    MISSION_MISMATCH,
    NOT_CONFIGURED,
    REFERENCE_SKIP_REASONS,
    UNSUPPORTED_VERSION,
    WRAP_REJECTED,
    GrantRefused,
    SkipReason,
    Unwrapped,
    atob,
    js_date_parse,
    unwrap_grant,
)

__all__ = [
    "ALL_SKIP_REASONS",
    "AUDIT_CIPHERTEXT_MALFORMED",
    "AUDIT_CIPHERTEXT_REJECTED",
    "AUDIT_DECRYPT_FAILED",
    "DERIVATION_VERSION",
    "ENC_PREFIX",
    "EXPIRED",
    "IV_BYTES",
    "MALFORMED",
    "MASTER_KEY_BYTES",
    "MDK_BYTES",
    "MISSION_MISMATCH",
    "NOT_CONFIGURED",
    "REFERENCE_SKIP_REASONS",
    "UNSUPPORTED_VERSION",
    "WRAP_REJECTED",
    "CipherError",
    "CipherMalformed",
    "CipherRejected",
    "DecryptedRecord",
    "Derivation",
    "GrantRefused",
    "KeyProblem",
    "MissionKey",
    "SkipReason",
    "Unwrapped",
    "atob",
    "audit_reason",
    "canonical_info_string",
    "decrypt_fields",
    "decrypt_value",
    "derive_mdk",
    "encrypt_value",
    "is_encrypted",
    "js_date_parse",
    "js_sorted",
    "load_private_key",
    "mint_grant",
    "oaep_sha256",
    "unwrap_grant",
]
