"""Loading the mission private key, literal ``\\n`` escapes from an env file included."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from grants import KeyProblem, MissionKey, load_private_key, oaep_sha256


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def pem(rsa_key: rsa.RSAPrivateKey) -> str:
    return pkcs8_pem(rsa_key)


def pkcs8_pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def loaded(pem: str | None) -> MissionKey:
    result = load_private_key(pem)
    assert isinstance(result, MissionKey), result
    return result


def problem(pem: str | None) -> KeyProblem:
    result = load_private_key(pem)
    assert isinstance(result, KeyProblem), result
    return result


def same_key(key: MissionKey, original: rsa.RSAPrivateKey) -> bool:
    return key.private_key.private_numbers() == original.private_numbers()


def test_loads_pkcs8_pem_with_64_char_lines(pem: str, rsa_key: rsa.RSAPrivateKey) -> None:
    lines = pem.strip().splitlines()
    assert lines[0] == "-----BEGIN PRIVATE KEY-----" and lines[-1] == "-----END PRIVATE KEY-----"
    assert {len(line) for line in lines[1:-2]} == {64}
    key = loaded(pem)
    assert key.key_size == 2048
    assert same_key(key, rsa_key)
    wrapped = rsa_key.public_key().encrypt(b"k" * 32, oaep_sha256())
    assert key.private_key.decrypt(wrapped, oaep_sha256()) == b"k" * 32


def test_accepts_literal_backslash_n_escapes(pem: str, rsa_key: rsa.RSAPrivateKey) -> None:
    flattened = pem.replace("\n", "\\n")  # how an env file line often carries it
    assert "\n" not in flattened
    assert same_key(loaded(flattened), rsa_key)
    assert same_key(loaded(pem.replace("\n", "\\r\\n")), rsa_key)


def test_accepts_any_whitespace_and_no_line_breaks(pem: str, rsa_key: rsa.RSAPrivateKey) -> None:
    assert same_key(loaded(pem.replace("\n", "\r\n")), rsa_key)
    assert same_key(loaded("  " + pem.replace("\n", "") + "\n\n"), rsa_key)
    body = "".join(pem.strip().splitlines()[1:-1])
    assert same_key(loaded(body), rsa_key)  # markers are optional, as in the TypeScript service


@pytest.mark.parametrize("pem", [None, "", "   \n\t"])
def test_not_configured(pem: str | None) -> None:
    result = problem(pem)
    assert result == KeyProblem("not-configured")
    assert "not configured" in result.message or "no mission private key" in result.message


def test_rejects_ed25519() -> None:
    result = problem(pkcs8_pem(ed25519.Ed25519PrivateKey.generate()))
    assert result.reason == "not-rsa"
    assert "Ed25519" in result.message


def test_rejects_ec() -> None:
    assert problem(pkcs8_pem(ec.generate_private_key(ec.SECP256R1()))).reason == "not-rsa"


def test_rejects_pkcs1_rsa_pem(rsa_key: rsa.RSAPrivateKey) -> None:
    pkcs1 = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode("ascii")
    assert pkcs1.startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert problem(pkcs1).reason == "not-pkcs8"  # WebCrypto's pkcs8 import rejects it too


def test_rejects_encrypted_pkcs8(rsa_key: rsa.RSAPrivateKey) -> None:
    encrypted = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ).decode("ascii")
    assert problem(encrypted).reason == "not-pkcs8"


def test_rejects_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    spki = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    assert problem(spki).reason in {"not-pkcs8", "unreadable"}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----", "not-base64"),
        ("-----BEGIN PRIVATE KEY-----\nMIIE\u00e9\n-----END PRIVATE KEY-----", "not-base64"),
        ("-----BEGIN PRIVATE KEY-----\nAAA\n-----END PRIVATE KEY-----", "not-base64"),
        ("-----BEGIN PRIVATE KEY----------END PRIVATE KEY-----", "not-base64"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "not-pkcs8"),
        ("MAUCAQAwAA==", "unreadable"),  # SEQUENCE { INTEGER 0, SEQUENCE {} }: PKCS#8-shaped junk
    ],
)
def test_garbage(text: str, reason: str) -> None:
    assert problem(text).reason == reason


def test_messages_carry_no_key_material(pem: str) -> None:
    body = "".join(pem.strip().splitlines()[1:-1])
    broken = pem.replace(body[100:110], "!!!!!!!!!!")
    for text in (broken, pem[:-200], pem.replace("\n", "\\t")):
        result = problem(text)
        chunks = {body[i : i + 8] for i in range(0, len(body) - 8, 4)}
        assert not any(chunk in result.message for chunk in chunks), result
        assert "\\" not in result.message


def test_repr_hides_the_key(pem: str, rsa_key: rsa.RSAPrivateKey) -> None:
    text = repr(loaded(pem))
    assert text == "MissionKey()"
    assert str(rsa_key.private_numbers().d)[:12] not in text


def test_key_problem_default_message_and_override() -> None:
    assert KeyProblem("not-rsa").message == "the mission private key is not an RSA key"
    assert KeyProblem("not-rsa", "custom").message == "custom"


@given(st.text())
def test_never_raises(text: str) -> None:
    """Any string gives a key or a problem, never an exception."""
    assert isinstance(load_private_key(text), MissionKey | KeyProblem)
