"""``enc:1:`` field values: AES vectors, and the TypeScript service's ``decrypt-value.test.ts`` cases."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from grants import (
    CipherError,
    CipherMalformed,
    CipherRejected,
    audit_reason,
    decrypt_fields,
    decrypt_value,
    encrypt_value,
    is_encrypted,
)

MDK = bytes.fromhex("7538df66c51d3ddb667c0135feb4ac7c2800ba372babc7e61e9423d6a9a65628")  # the golden derivation's MDK
MASTER = bytes(range(1, 33))
IV = bytes(range(12))  # 00 01 … 0b
OTHER_KEY = bytes(range(100, 132))

VECTORS: list[tuple[object, str]] = [
    ("Private Titel", "enc:1:AAECAwQFBgcICQoL.lXfrX6FYhrd22r+D5BOstCNQqFIIjUtXX0yb3M86Pw=="),
    ({"markdown": "secret"}, "enc:1:AAECAwQFBgcICQoL.zAX0V6VSlr0h4PTNowzrYmLU0eKtoKrhWg1ySi1oULQeVbWFHw=="),
    ("hello mission", "enc:1:AAECAwQFBgcICQoL.lU/8WrtW0r8//aWe7hGssJyju37ROodMVL2VHMY65w=="),
]


def raw_blob(key: bytes, plaintext: bytes, iv: bytes = IV) -> str:
    """A blob around arbitrary plaintext bytes (not necessarily JSON)."""
    ct = AESGCM(key).encrypt(iv, plaintext, None)
    return f"enc:1:{base64.b64encode(iv).decode()}.{base64.b64encode(ct).decode()}"


def flip(blob: str, index: int) -> str:
    """``blob`` with one bit of ciphertext byte ``index`` flipped (negative: from the tag's end)."""
    head, ct_b64 = blob.split(".", 1)
    ct = bytearray(base64.b64decode(ct_b64))
    ct[index] ^= 0x01
    return f"{head}.{base64.b64encode(bytes(ct)).decode()}"


def malformed(value: str, key: bytes = MDK) -> str:
    with pytest.raises(CipherMalformed) as caught:
        decrypt_value(key, value)
    assert audit_reason(caught.value) == "ciphertext-malformed"
    return str(caught.value)


def rejected(value: str, key: bytes = MDK) -> None:
    with pytest.raises(CipherRejected) as caught:
        decrypt_value(key, value)
    assert audit_reason(caught.value) == "ciphertext-tampered-or-wrong-key"


# --- AES vectors ----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "blob"), VECTORS)
def test_vectors_encrypt_exactly(value: object, blob: str) -> None:
    assert encrypt_value(MDK, value, IV) == blob


@pytest.mark.parametrize(("value", "blob"), VECTORS)
def test_vectors_decrypt_back(value: object, blob: str) -> None:
    assert decrypt_value(MDK, blob) == value


def test_contracts_vectors() -> None:
    """The webapp's own vector under the master key, and under the MDK."""
    under_master = "enc:1:AAECAwQFBgcICQoL.U3Vo+aO8FG18R9syEP3V55+bpeRovbdBwc1x8URE5w=="
    under_mdk = "enc:1:AAECAwQFBgcICQoL.lWLwWLxYh7Ql4r+E9Rqsjv6K4+GzSne8w1ffiwByyw=="
    assert encrypt_value(MASTER, "Einkaufsliste", IV) == under_master
    assert encrypt_value(MDK, "Einkaufsliste", IV) == under_mdk
    assert decrypt_value(MASTER, under_master) == decrypt_value(MDK, under_mdk) == "Einkaufsliste"


def test_master_key_ciphertext_fails_under_the_mdk() -> None:
    """Records encrypted with the master key do not open with the MDK a grant carries."""
    rejected(encrypt_value(MASTER, "Einkaufsliste", IV))


# --- detection and pass-through -------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("enc:1:abc.def", True), ("enc:1:", True), ("plain", False), ("ENC:1:abc.def", False),
    (" enc:1:abc.def", False), ("enc:2:abc.def", False), (None, False), (42, False), (b"enc:1:a.b", False),
])
def test_is_encrypted(value: object, expected: bool) -> None:
    assert is_encrypted(value) is expected


@pytest.mark.parametrize("value", [None, 42, 1.5, True, "plain", "", "enc:", ["enc:1:a.b"], {"a": "enc:1:a.b"}])
def test_non_prefixed_values_pass_through(value: object) -> None:
    assert decrypt_value(MDK, value) is value


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["Grüße aus Köln 🙂", "", None, 0, -3.25, True, [1, "zwei", None],
                                   {"nested": {"list": [1, 2], "ok": False}}])
def test_round_trip(value: object) -> None:
    assert decrypt_value(MDK, encrypt_value(MDK, value, IV)) == value


def test_plaintext_is_compact_json_like_json_stringify() -> None:
    blob = encrypt_value(MDK, {"a": [1, "ü"]}, IV)
    ct = base64.b64decode(blob.split(".", 1)[1])
    assert AESGCM(MDK).decrypt(IV, ct, None) == '{"a":[1,"ü"]}'.encode()


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12),
       st.binary(min_size=12, max_size=12))
def test_round_trip_any_json(value: object, iv: bytes) -> None:
    """Every JSON value (no floats: Python and JS print them differently) survives a round trip."""
    assert decrypt_value(MDK, encrypt_value(MDK, value, iv)) == value


def test_encrypt_value_wants_a_12_byte_iv() -> None:
    with pytest.raises(ValueError, match="expected 12-byte IV, got 16"):
        encrypt_value(MDK, "x", bytes(16))


# --- malformed ------------------------------------------------------------------------------


def test_missing_separator() -> None:
    assert malformed("enc:1:nodot") == "mana-ai/crypto: malformed encrypted blob (missing iv/ct separator)"
    assert malformed("enc:1:") == "mana-ai/crypto: malformed encrypted blob (missing iv/ct separator)"


@pytest.mark.parametrize("iv_size", [0, 8, 11, 13, 16])
def test_wrong_iv_length(iv_size: int) -> None:
    good = encrypt_value(MDK, "x", IV)
    blob = f"enc:1:{base64.b64encode(bytes(iv_size)).decode()}.{good.split('.', 1)[1]}"
    assert malformed(blob) == f"mana-ai/crypto: expected 12-byte IV, got {iv_size}"


def test_splits_at_the_first_dot() -> None:
    # split at the first ".": the IV is fine and the ciphertext "xxxx.yyyy" is what is malformed
    message = malformed("enc:1:AAECAwQFBgcICQoL.xxxx.yyyy")
    assert "ciphertext" in message


@pytest.mark.parametrize("blob", [
    "enc:1:AAECAwQFBgcICQo!.AAAA",
    "enc:1:AAECAwQFBgcICQoL.lXfrX6FYhrd22r+D5BOstCNQqFIIjUtXX0yb3M86Pw",  # padding missing
    "enc:1:AAECAwQFBgcICQoL.lXfrX6FYhrd22r+D5BOstCNQqFIIjUtXX0yb3M86Pw==AAAA",  # data after padding
    "enc:1:AAECAwQFBgcICQoL.lXfrX6FYhrd22r+D5BOst CNQqFIIjUtXX0yb3M86Pw==",  # whitespace
    "enc:1:AAECAwQFBgcICQoL.lXfrX6FYhrd22r-D5BOstCNQqFIIjUtXX0yb3M86Pw==",  # URL alphabet
    "enc:1:AAECAwQFBgcICQoL.ä",
    "enc:1:=AAECAwQFBgcICQoL.AAAA",
])
def test_invalid_base64_is_malformed(blob: str) -> None:
    malformed(blob)


@pytest.mark.parametrize("plaintext", [b"not json", b"", b'{"a":1', b"NaN", b"[Infinity]", b"\xff\xfe\"x\"",
                                       b'"\xc3"', b"undefined"])
def test_plaintext_that_is_not_utf8_json_is_malformed(plaintext: bytes) -> None:
    assert "not UTF-8 JSON" in malformed(raw_blob(MDK, plaintext))


def test_a_leading_bom_is_dropped_like_text_decoder() -> None:
    assert decrypt_value(MDK, raw_blob(MDK, b'\xef\xbb\xbf"x"')) == "x"


# --- rejected -------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 5, -17, -1])  # ciphertext bytes and tag bytes
def test_tampered_ciphertext_is_rejected(index: int) -> None:
    blob = VECTORS[0][1]
    rejected(flip(blob, index))


def test_tampered_iv_is_rejected() -> None:
    blob = encrypt_value(MDK, "x", IV)
    other_iv = base64.b64encode(bytes(range(1, 13))).decode()
    rejected(f"enc:1:{other_iv}.{blob.split('.', 1)[1]}")


def test_wrong_key_is_rejected() -> None:
    for _value, blob in VECTORS:
        rejected(blob, OTHER_KEY)


@pytest.mark.parametrize("ct", [b"", b"short", bytes(15)])
def test_ciphertext_shorter_than_the_tag_is_rejected(ct: bytes) -> None:
    rejected(f"enc:1:{base64.b64encode(IV).decode()}.{base64.b64encode(ct).decode()}")


# --- decrypt_fields -------------------------------------------------------------------------


def test_decrypt_fields_decrypts_only_enc_fields() -> None:
    record: dict[str, object] = {
        "id": "n1",
        "title": encrypt_value(MDK, "Private Titel", IV),
        "createdAt": "2026-04-15T00:00:00.000Z",
        "content": encrypt_value(MDK, {"markdown": "geheimer inhalt"}, bytes(range(1, 13))),
        "pinned": True,
        "tags": ["enc:1:not-top-level"],
        "order": None,
    }
    before = dict(record)
    result = decrypt_fields(MDK, record)
    assert result.fields == ("content", "title")
    assert result.record == {**before, "title": "Private Titel", "content": {"markdown": "geheimer inhalt"}}
    assert list(result.record) == list(record)  # key order kept
    assert record == before  # the input is not modified


def test_decrypt_fields_no_op_record() -> None:
    result = decrypt_fields(MDK, {"id": "n1", "title": "plain", "n": 3})
    assert result.fields == ()
    assert result.record == {"id": "n1", "title": "plain", "n": 3}


def test_decrypt_fields_raises_the_first_error() -> None:
    record: dict[str, object] = {"a": "enc:1:nodot", "b": flip(VECTORS[0][1], 0)}
    with pytest.raises(CipherMalformed):
        decrypt_fields(MDK, record)
    with pytest.raises(CipherRejected):
        decrypt_fields(MDK, {"b": record["b"], "a": record["a"]})


def test_decrypt_fields_with_a_wrong_key() -> None:
    with pytest.raises(CipherError) as caught:
        decrypt_fields(OTHER_KEY, {"title": VECTORS[0][1]})
    assert audit_reason(caught.value) == "ciphertext-tampered-or-wrong-key"


def test_decrypted_record_repr_hides_content() -> None:
    result = decrypt_fields(MDK, {"title": VECTORS[0][1]})
    assert "Private Titel" not in repr(result)
    assert "title" in repr(result)


# --- errors ---------------------------------------------------------------------------------


def test_audit_reasons() -> None:
    assert audit_reason(CipherMalformed()) == "ciphertext-malformed"
    assert audit_reason(CipherRejected()) == "ciphertext-tampered-or-wrong-key"
    assert audit_reason(CipherError()) == "decrypt-failed"
    assert audit_reason(ValueError("boom")) == "decrypt-failed"


def test_error_tree_and_default_messages() -> None:
    assert issubclass(CipherMalformed, CipherError) and issubclass(CipherRejected, CipherError)
    assert not issubclass(CipherError, ValueError)
    for cls in (CipherError, CipherMalformed, CipherRejected):
        assert str(cls()) == cls.__doc__
        assert str(cls()).startswith("mana-ai/crypto: ")
    assert str(CipherRejected("custom")) == "custom"


def test_rejected_keeps_the_cause() -> None:
    with pytest.raises(CipherRejected) as caught:
        decrypt_value(OTHER_KEY, VECTORS[0][1])
    assert type(caught.value.__cause__).__name__ == "InvalidTag"
