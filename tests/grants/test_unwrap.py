"""Unwrapping mission grants: the TypeScript service's checks, the round trip, and our mission check."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given
from hypothesis import strategies as st

from grants import (
    ALL_SKIP_REASONS,
    REFERENCE_SKIP_REASONS,
    Derivation,
    GrantRefused,
    MissionKey,
    Unwrapped,
    atob,
    decrypt_value,
    derive_mdk,
    encrypt_value,
    js_date_parse,
    load_private_key,
    mint_grant,
    oaep_sha256,
    unwrap_grant,
)

NOW = datetime(2026, 4, 15, 12, 0, tzinfo=UTC)
MASTER = bytes(range(1, 33))
MISSION = "mission-abc"
DERIVATION = Derivation(MISSION, ("notes",), ("notes:n1",))


@dataclass(frozen=True)
class KeyPair:
    private: rsa.RSAPrivateKey
    mission_key: MissionKey

    @property
    def public(self) -> rsa.RSAPublicKey:
        return self.private.public_key()


def _key_pair() -> KeyPair:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    assert all(len(line) <= 64 for line in pem.splitlines())
    loaded = load_private_key(pem)  # configured the way the daemon does it
    assert isinstance(loaded, MissionKey), loaded
    return KeyPair(private, loaded)


@pytest.fixture(scope="module")
def pair() -> KeyPair:
    return _key_pair()


@pytest.fixture(scope="module")
def other_pair() -> KeyPair:
    return _key_pair()


def mint(pair: KeyPair, *, ttl: timedelta = timedelta(seconds=60)) -> dict[str, object]:
    return mint_grant(pair.public, MASTER, DERIVATION, issued_at=NOW, expires_at=NOW + ttl)


def grant_with(
    pair: KeyPair,
    plaintext: bytes | None = None,
    *,
    derivation: object = None,
    mgf_hash: hashes.HashAlgorithm | None = None,
    **fields: object,
) -> dict[str, object]:
    """A hand-made grant: ``plaintext`` wrapped for ``pair`` (default: the MDK), fields overridden."""
    mdk = derive_mdk(MASTER, DERIVATION) if plaintext is None else plaintext
    oaep = oaep_sha256() if mgf_hash is None else padding.OAEP(
        mgf=padding.MGF1(algorithm=mgf_hash), algorithm=hashes.SHA256(), label=None
    )
    grant: dict[str, object] = {
        "wrappedKey": base64.b64encode(pair.public.encrypt(mdk, oaep)).decode("ascii"),
        "derivation": DERIVATION.to_json() if derivation is None else derivation,
        "issuedAt": "2026-04-15T12:00:00.000Z",
        "expiresAt": "2026-04-15T12:01:00.000Z",
    }
    grant.update(fields)
    return grant


def unwrap(key: MissionKey | None, grant: object, *, now: datetime = NOW,
           mission_id: str = MISSION) -> Unwrapped | GrantRefused:
    return unwrap_grant(key, grant, mission_id=mission_id, now=now)


def ok(pair: KeyPair, grant: object, *, now: datetime = NOW) -> Unwrapped:
    result = unwrap(pair.mission_key, grant, now=now)
    assert isinstance(result, Unwrapped), result
    return result


def refused(pair: KeyPair | None, grant: object, *, now: datetime = NOW, mission_id: str = MISSION) -> str:
    result = unwrap(None if pair is None else pair.mission_key, grant, now=now, mission_id=mission_id)
    assert isinstance(result, GrantRefused), result
    assert result.reason in ALL_SKIP_REASONS
    return result.reason


# --- round trip -----------------------------------------------------------------------------


def test_round_trip(pair: KeyPair) -> None:
    result = ok(pair, mint(pair))
    independent = derive_mdk(MASTER, DERIVATION)
    assert result.mdk == independent and len(result.mdk) == 32
    assert result.allowlist == frozenset({"notes:n1"})
    message = encrypt_value(independent, "geheimer inhalt", bytes(range(12)))
    assert decrypt_value(result.mdk, message) == "geheimer inhalt"


def test_repr_hides_the_mdk(pair: KeyPair) -> None:
    result = ok(pair, mint(pair))
    assert result.mdk.hex() not in repr(result)
    assert repr(result.mdk) not in repr(result)


def test_allowlist_is_every_string_record_id(pair: KeyPair) -> None:
    derivation = {"version": "v1", "missionId": MISSION, "tables": ["notes", "tasks"],
                  "recordIds": ["notes:n1", "tasks:t1", 7, None, "notes:n1", ["x"]]}
    assert ok(pair, grant_with(pair, derivation=derivation)).allowlist == {"notes:n1", "tasks:t1"}


@pytest.mark.parametrize("record_ids", [None, "notes:n1", {"notes:n1": True}, 3])
def test_allowlist_empty_without_a_list(pair: KeyPair, record_ids: object) -> None:
    derivation = {"version": "v1", "missionId": MISSION, "recordIds": record_ids}
    assert ok(pair, grant_with(pair, derivation=derivation)).allowlist == frozenset()


def test_issued_at_and_tables_are_not_checked(pair: KeyPair) -> None:
    derivation = {"version": "v1", "missionId": MISSION, "tables": "garbage", "recordIds": ["notes:n1"]}
    assert ok(pair, grant_with(pair, derivation=derivation, issuedAt="yesterday")).allowlist == {"notes:n1"}


# --- 1. not-configured ----------------------------------------------------------------------


@pytest.mark.parametrize("grant", [None, "garbage", {}, {"expiresAt": "1970-01-01T00:00:00Z"}])
def test_not_configured_comes_first(grant: object) -> None:
    assert refused(None, grant) == "not-configured"


def test_not_configured_with_a_valid_grant(pair: KeyPair) -> None:
    assert refused(None, mint(pair)) == "not-configured"


# --- 2. expired -----------------------------------------------------------------------------


def test_expired_ttl_minus_one_second(pair: KeyPair) -> None:
    assert refused(pair, mint(pair, ttl=timedelta(seconds=-1))) == "expired"


def test_equal_instant_is_valid(pair: KeyPair) -> None:
    ok(pair, mint(pair, ttl=timedelta(0)))


def test_one_millisecond_late_is_expired(pair: KeyPair) -> None:
    assert refused(pair, mint(pair, ttl=timedelta(milliseconds=-1))) == "expired"


def test_now_is_compared_in_whole_milliseconds(pair: KeyPair) -> None:
    # Date.now() has no microseconds: 12:00:00.000999 is still the instant 12:00:00.000
    ok(pair, mint(pair, ttl=timedelta(0)), now=NOW + timedelta(microseconds=999))
    assert refused(pair, mint(pair, ttl=timedelta(0)), now=NOW + timedelta(milliseconds=1)) == "expired"


def test_now_in_another_zone(pair: KeyPair) -> None:
    cest = timezone(timedelta(hours=2))
    ok(pair, mint(pair, ttl=timedelta(0)), now=NOW.astimezone(cest))


def test_naive_now_is_a_programmer_error(pair: KeyPair) -> None:
    with pytest.raises(ValueError, match="aware"):
        unwrap(pair.mission_key, mint(pair), now=NOW.replace(tzinfo=None))


@pytest.mark.parametrize(
    "expires_at",
    [
        None,
        "",
        "garbage",
        1_900_000_000_000,  # a number is not an ISO string
        "Wed, 15 Apr 2026 12:01:00 GMT",  # legacy formats engines accept: not ISO, so expired
        "2026-04-15 12:01:00Z",
        "2026-04-15t12:01:00z",
        "2026-02-30T12:00:00Z",
        "2026-04-15T25:00:00Z",
        "2026-04-15T12:01:00+24:00",
        "2026-04-15T12:01Z:00",
        "+002026-04-15T12:01:00Z ",
        "-000000-01-01T00:00:00Z",
        "２０２６-04-15T12:01:00Z",
    ],
)
def test_unparseable_expiry_is_expired(pair: KeyPair, expires_at: object) -> None:
    assert refused(pair, grant_with(pair, expiresAt=expires_at)) == "expired"


def test_missing_expiry_is_expired(pair: KeyPair) -> None:
    grant = grant_with(pair)
    del grant["expiresAt"]
    assert refused(pair, grant) == "expired"


@pytest.mark.parametrize(
    "expires_at",
    [
        "2026-04-15T12:00:00Z",
        "2026-04-15T12:00:00.000000001Z",
        "2026-04-15T14:00:00+02:00",
        "2026-04-15T07:30-04:30",
        "2026-04-15T12:00:00",  # no offset: read as UTC (see js_date_parse)
        "2026-04-16",
        "2026-04-15T24:00:00Z",
        "+002026-04-15T12:00:00.000Z",
        "+275760-09-13T00:00:00.000Z",
    ],
)
def test_iso_expiry_forms_are_valid(pair: KeyPair, expires_at: str) -> None:
    ok(pair, grant_with(pair, expiresAt=expires_at))


@pytest.mark.parametrize("grant", [None, "grant", ["wrappedKey"], 42])
def test_non_object_grant_is_expired(pair: KeyPair, grant: object) -> None:
    assert refused(pair, grant) == "expired"  # Date.parse(undefined) is NaN


# --- 3. malformed base64 (atob) -------------------------------------------------------------


@pytest.mark.parametrize(
    "wrapped_key",
    [
        "abc!",
        "AAAAA",  # length ≡ 1 (mod 4)
        "AA=A",
        "AAA==",
        "A===",
        "AA\vAA",  # \v is not ASCII whitespace for atob
        "AA\u00a0AA",
        "AAAA-_",
        "AAA\u00e9",
        None,
        1234,
    ],
)
def test_malformed_wrapped_key(pair: KeyPair, wrapped_key: object) -> None:
    assert refused(pair, grant_with(pair, wrappedKey=wrapped_key)) == "malformed"


def test_missing_wrapped_key_is_malformed(pair: KeyPair) -> None:
    grant = grant_with(pair)
    del grant["wrappedKey"]
    assert refused(pair, grant) == "malformed"


def test_whitespace_inside_wrapped_key_is_accepted(pair: KeyPair) -> None:
    grant = mint(pair)
    key = grant["wrappedKey"]
    assert isinstance(key, str)
    spaced = "\n".join(key[i : i + 64] for i in range(0, len(key), 64))
    spaced = " \t" + spaced[:10] + "\r\n" + spaced[10:20] + "\f" + spaced[20:] + " "
    assert ok(pair, {**grant, "wrappedKey": spaced}).mdk == derive_mdk(MASTER, DERIVATION)


def test_missing_padding_is_tolerated(pair: KeyPair) -> None:
    grant = mint(pair)
    key = grant["wrappedKey"]
    assert isinstance(key, str) and key.endswith("==")
    ok(pair, {**grant, "wrappedKey": key.rstrip("=")})
    # but half the padding is not: atob("AA=") throws (length not a multiple of 4, "=" left)
    assert refused(pair, {**grant, "wrappedKey": key[:-1]}) == "malformed"


def test_expired_is_checked_before_malformed(pair: KeyPair) -> None:
    assert refused(pair, grant_with(pair, wrappedKey="!", expiresAt="2026-04-15T11:59:59Z")) == "expired"


# --- 4. wrap-rejected -----------------------------------------------------------------------


def test_wrapped_for_another_key_pair(pair: KeyPair, other_pair: KeyPair) -> None:
    assert refused(pair, mint(other_pair)) == "wrap-rejected"


def test_oaep_with_mgf1_sha1_is_rejected(pair: KeyPair) -> None:
    """Java's OAEPWithSHA-256AndMGF1Padding uses MGF1-SHA1; we do not accept it."""
    assert refused(pair, grant_with(pair, mgf_hash=hashes.SHA1())) == "wrap-rejected"


@pytest.mark.parametrize("wrapped_key", ["", "AAAA", base64.b64encode(bytes(256)).decode(), "A" * 400])
def test_valid_base64_but_not_a_ciphertext(pair: KeyPair, wrapped_key: str) -> None:
    assert refused(pair, grant_with(pair, wrappedKey=wrapped_key)) == "wrap-rejected"


# --- 5. malformed plaintext -----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_plaintext_not_32_bytes_is_malformed(pair: KeyPair, size: int) -> None:
    assert refused(pair, grant_with(pair, bytes(range(size)))) == "malformed"


# --- 6, 7. ours: mission-mismatch, unsupported-version --------------------------------------


def test_mission_mismatch(pair: KeyPair) -> None:
    assert refused(pair, mint(pair), mission_id="mission-other") == "mission-mismatch"


@pytest.mark.parametrize("derivation", [[], "v1", 3, {"version": "v1"},
                                        {"version": "v1", "missionId": None, "recordIds": ["notes:n1"]}])
def test_mission_mismatch_without_a_derivation_mission(pair: KeyPair, derivation: object) -> None:
    assert refused(pair, grant_with(pair, derivation=derivation)) == "mission-mismatch"


def test_missing_derivation_is_mission_mismatch(pair: KeyPair) -> None:
    grant = grant_with(pair)
    del grant["derivation"]
    assert refused(pair, grant) == "mission-mismatch"


@pytest.mark.parametrize("version", ["v2", "v0", "V1", None, 1])
def test_unsupported_version(pair: KeyPair, version: object) -> None:
    derivation = {"version": version, "missionId": MISSION, "recordIds": ["notes:n1"]}
    assert refused(pair, grant_with(pair, derivation=derivation)) == "unsupported-version"


def test_mission_is_checked_before_version(pair: KeyPair) -> None:
    derivation = {"version": "v2", "missionId": "other", "recordIds": ["notes:n1"]}
    assert refused(pair, grant_with(pair, derivation=derivation)) == "mission-mismatch"


def test_our_checks_run_after_the_reference_checks(pair: KeyPair, other_pair: KeyPair) -> None:
    derivation = {"version": "v9", "missionId": "other"}
    assert refused(pair, grant_with(other_pair, derivation=derivation)) == "wrap-rejected"
    assert refused(pair, grant_with(pair, bytes(31), derivation=derivation)) == "malformed"


def test_reason_constants() -> None:
    assert REFERENCE_SKIP_REASONS == ("not-configured", "expired", "malformed", "wrap-rejected")
    assert ALL_SKIP_REASONS == (*REFERENCE_SKIP_REASONS, "mission-mismatch", "unsupported-version")


# --- the helpers on their own ---------------------------------------------------------------


@given(st.binary(max_size=300), st.data())
def test_atob_round_trips_with_whitespace_and_without_padding(raw: bytes, data: st.DataObject) -> None:
    """Any padded encoding decodes; so does it with ASCII whitespace inserted or padding dropped."""
    encoded = base64.b64encode(raw).decode("ascii")
    assert atob(encoded) == raw
    assert atob(encoded.rstrip("=")) == raw
    spaced = "".join(c + data.draw(st.sampled_from(["", "", " ", "\n", "\t", "\r", "\f"])) for c in encoded)
    assert atob(spaced) == raw


def test_atob_discards_leftover_bits() -> None:
    assert atob("AB==") == atob("AA==") == b"\x00"
    assert atob("AB") == b"\x00"


def test_atob_rejects() -> None:
    for text in ("A", "AAAAA", "=", "AA=", "==AA", "AA=A", "A===", "AAAA====", "A\u0000AA", "AA\vAA"):
        assert atob(text) is None, text
    assert atob("") == b""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:00.000Z", 0),
        ("1970", 0),
        ("1970-01", 0),
        ("1970-01-01T00:00Z", 0),
        ("1970-01-01T00:00:00.5Z", 500),
        ("1970-01-01T00:00:00.123999Z", 123),
        ("1970-01-01T01:00:00+01:00", 0),
        ("1969-12-31T23:59:59.999Z", -1),
        ("2000-02-29T00:00:00Z", 951782400000),
        ("1970-01-01T24:00:00Z", 86_400_000),
        ("+275760-09-13T00:00:00.000Z", 8_640_000_000_000_000),
        ("-271821-04-20T00:00:00.000Z", -8_640_000_000_000_000),
        ("+275760-09-13T00:00:00.001Z", None),
        ("1900-02-29", None),
        ("1970-01-01T24:00:01Z", None),
        ("1970-01-01T00:60Z", None),
        ("1970-01-01T00:00:60Z", None),
        ("1970-13-01", None),
        ("1970-00-01", None),
        ("1970-01-00", None),
        ("1970-01-01Z", None),
        ("1970-01-01T00:00:00.Z", None),
        ("19700101T000000Z", None),
    ],
)
def test_js_date_parse(text: str, expected: int | None) -> None:
    assert js_date_parse(text) == expected


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31),
                    timezones=st.just(UTC)))
def test_js_date_parse_agrees_with_datetime(moment: datetime) -> None:
    """toISOString() output parses back to the instant datetime computes (ms truncated)."""
    text = (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}"
            f":{moment.second:02d}.{moment.microsecond // 1000:03d}Z")
    expected = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert js_date_parse(text) == expected
