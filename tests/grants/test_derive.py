"""MDK derivation (the cases of shared-ai's ``grant.test.ts``) and grant minting."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from grants import Derivation, canonical_info_string, derive_mdk, js_sorted, mint_grant, oaep_sha256

MASTER = bytes(range(1, 33))  # 01 02 … 20
GOLDEN = Derivation("mission-abc", ("notes", "tasks"), ("notes:n1", "tasks:t1"))
GOLDEN_MDK_HEX = "7538df66c51d3ddb667c0135feb4ac7c2800ba372babc7e61e9423d6a9a65628"


def test_golden_vector() -> None:
    assert derive_mdk(MASTER, GOLDEN).hex() == GOLDEN_MDK_HEX


def test_exact_info_string() -> None:
    assert canonical_info_string(GOLDEN) == "mana-ai-mission-grant:v1:tables=notes,tasks:ids=notes:n1,tasks:t1"


def test_info_string_is_order_independent() -> None:
    shuffled = Derivation("mission-abc", ("tasks", "notes"), ("tasks:t1", "notes:n1"))
    assert canonical_info_string(shuffled) == canonical_info_string(GOLDEN)


@given(st.permutations(["notes", "tasks", "events", "journalEntries"]),
       st.permutations(["notes:n1", "tasks:t1", "events:e9", "notes:n10"]))
def test_key_is_order_independent(tables: list[str], ids: list[str]) -> None:
    """Any order of tables and record ids gives the same info string and the same MDK."""
    base = Derivation("m", ("events", "journalEntries", "notes", "tasks"),
                      ("events:e9", "notes:n1", "notes:n10", "tasks:t1"))
    other = Derivation("m", tuple(tables), tuple(ids))
    assert canonical_info_string(other) == canonical_info_string(base)
    assert derive_mdk(MASTER, other) == derive_mdk(MASTER, base)


def test_is_32_bytes_and_deterministic() -> None:
    first = derive_mdk(MASTER, GOLDEN)
    assert len(first) == 32
    assert derive_mdk(MASTER, GOLDEN) == first  # a fresh HKDF object each call


def test_differs_by_mission() -> None:
    m1 = Derivation("m1", ("notes",), ("notes:n1",))
    m2 = Derivation("m2", ("notes",), ("notes:n1",))
    assert derive_mdk(MASTER, m1) != derive_mdk(MASTER, m2)


def test_differs_by_scope() -> None:
    base = derive_mdk(MASTER, Derivation("m", ("notes",), ("notes:n1",)))
    assert derive_mdk(MASTER, Derivation("m", ("notes", "tasks"), ("notes:n1",))) != base
    assert derive_mdk(MASTER, Derivation("m", ("notes",), ("notes:n1", "notes:n2"))) != base


def test_differs_by_master_key() -> None:
    assert derive_mdk(bytes(32), GOLDEN) != derive_mdk(MASTER, GOLDEN)


def test_rejects_version_v0() -> None:
    with pytest.raises(ValueError) as caught:
        derive_mdk(MASTER, Derivation("m", ("notes",), ("notes:n1",), version="v0"))
    assert str(caught.value) == "shared-ai/grant: unsupported derivation version v0, expected v1"


def test_rejects_16_byte_master_key() -> None:
    with pytest.raises(ValueError) as caught:
        derive_mdk(bytes(16), GOLDEN)
    assert str(caught.value) == "shared-ai/grant: expected 32-byte master key, got 16"


def test_master_key_is_checked_before_version() -> None:
    with pytest.raises(ValueError, match="master key"):
        derive_mdk(bytes(16), Derivation("m", (), (), version="v0"))


def test_js_sort_is_utf16_code_unit_order() -> None:
    # U+FF5E (one unit 0xFF5E) sorts after U+1F600 (surrogates 0xD83D 0xDE00) in JS,
    # while Python's code-point order puts it first
    assert sorted(["\U0001f600", "\uff5e"]) == ["\uff5e", "\U0001f600"]
    assert js_sorted(["\uff5e", "\U0001f600"]) == ["\U0001f600", "\uff5e"]
    assert js_sorted(["tasks", "notes", "Notes", "note"]) == ["Notes", "note", "notes", "tasks"]


def test_to_json_is_the_wire_shape_sorted() -> None:
    derivation = Derivation("mission-abc", ("tasks", "notes"), ("tasks:t1", "notes:n1"))
    assert derivation.to_json() == {
        "version": "v1",
        "missionId": "mission-abc",
        "tables": ["notes", "tasks"],
        "recordIds": ["notes:n1", "tasks:t1"],
    }


def test_mint_grant_like_mana_auth() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issued = datetime(2026, 4, 15, 12, 0, 0, 123456, tzinfo=UTC)
    grant = mint_grant(private.public_key(), MASTER, GOLDEN, issued_at=issued,
                       expires_at=issued + timedelta(days=7))
    assert grant["issuedAt"] == "2026-04-15T12:00:00.123Z"
    assert grant["expiresAt"] == "2026-04-22T12:00:00.123Z"
    assert grant["derivation"] == GOLDEN.to_json()
    wrapped = grant["wrappedKey"]
    assert isinstance(wrapped, str) and len(wrapped) == 344  # 256 bytes, padded base64
    assert private.decrypt(base64.b64decode(wrapped), oaep_sha256()).hex() == GOLDEN_MDK_HEX


def test_mint_grant_rejects_naive_timestamps() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    naive = datetime(2026, 4, 15, 12, 0)
    with pytest.raises(ValueError, match="aware"):
        mint_grant(private.public_key(), MASTER, GOLDEN, issued_at=naive, expires_at=naive)
