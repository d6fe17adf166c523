"""Mission inputs end to end: grant, allow-list, decryption, audit rows, the prompt the LLM sees."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fake_llm import plan_reply, running_fake_llm
from grants.cipher import encrypt_value
from grants.derive import Derivation, derive_mdk, mint_grant
from observability.metrics import Metrics
from planner.inputs import USER_DATA_NOTICE
from planning import CREATE_TASK, planning_runtime, written_rows
from seed import change, fetch, insert_rows, mission

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)
MASTER = bytes(range(1, 33))
DERIVATION = Derivation("m1", ("notes", "tasks"), ("notes:n1", "tasks:t1"))


@pytest.fixture(scope="module")
def rsa_key() -> Iterator[rsa.RSAPrivateKey]:
    yield rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def grant(key: rsa.RSAPrivateKey, derivation: Derivation = DERIVATION, *, ttl: timedelta = timedelta(days=7)) -> Any:
    now = datetime.now(timezone.utc)
    return mint_grant(key.public_key(), MASTER, derivation, issued_at=now, expires_at=now + ttl)


def enc(mdk: bytes, value: object) -> str:
    return encrypt_value(mdk, value, os.urandom(12))


def inputs() -> list[dict[str, str]]:
    return [{"module": "notes", "table": "notes", "id": "n1"}, {"module": "notes", "table": "notes", "id": "n2"},
            {"module": "todo", "table": "tasks", "id": "t1"}, {"module": "goals", "table": "companionGoals", "id": "g-1"},
            {"module": "unknown", "table": "x", "id": "1"}, {"bogus": True}]  # type: ignore[dict-item]


async def seed_inputs(pool: asyncpg.Pool) -> None:
    mdk = derive_mdk(MASTER, DERIVATION)
    wrong = derive_mdk(bytes(32), DERIVATION)
    await insert_rows(
        pool,
        {**change("notes", "n1", "insert", {"id": "n1", "title": enc(mdk, "Private Titel"),
                                             "content": enc(mdk, "geheimer inhalt"), "isPinned": False}),
         "app_id": "notes", "created_at": PAST},
        {**change("notes", "n2", "insert", {"id": "n2", "title": enc(mdk, "nicht freigegeben")}),
         "app_id": "notes", "created_at": PAST},
        {**change("tasks", "t1", "insert", {"id": "t1", "title": enc(wrong, "falscher Schlüssel")}),
         "app_id": "todo", "created_at": PAST},
        {**change("companionGoals", "g-1", "insert", {"id": "g-1", "title": "Laufen", "currentValue": 2,
                                                       "target": {"value": 4}}),
         "app_id": "companion", "created_at": PAST},
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"service": "mana-ai", **labels}) or 0.0


async def test_granted_inputs_are_decrypted_audited_and_wrapped(pool: asyncpg.Pool, rsa_key: rsa.RSAPrivateKey) -> None:
    await seed_inputs(pool)
    await insert_rows(pool, {**mission("m1", inputs=inputs(), grant=grant(rsa_key)), "created_at": PAST})
    metrics = Metrics()
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, metrics, private_key_pem=pem(rsa_key)) as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.plans_written_back == 1, stats
    system, user = (m["content"] for m in llm.requests[0]["messages"])
    assert system.endswith(USER_DATA_NOTICE)
    assert ("## Verlinkte Inputs\n"
            "### notes/notes: Private Titel\n<user_data>\ngeheimer inhalt\n</user_data>\n\n"
            "### goals/companionGoals: Laufen\nFortschritt: 2 / 4 (unbekannt)\n\n") in user
    assert "nicht freigegeben" not in user and "falscher" not in user
    [row] = await written_rows(pool)
    iteration_id = row["data"]["iterations"][0]["id"]
    audit = await fetch(pool, "SELECT table_name, record_id, status, reason, iteration_id FROM mana_ai.decrypt_audit"
                              " ORDER BY record_id")
    assert [tuple(a) for a in audit] == [
        ("notes", "n1", "ok", None, iteration_id),
        ("notes", "n2", "scope-violation", "record-not-in-grant-allowlist", iteration_id),
        ("tasks", "t1", "failed", "ciphertext-tampered-or-wrong-key", iteration_id)]
    assert sample(metrics, "mana_ai_decrypts_total", table="notes") == 2
    assert sample(metrics, "mana_ai_grant_scope_violations_total", table="notes") == 1


@pytest.mark.parametrize(("make_grant", "reason"), [
    (lambda key: None, None),
    (lambda key: grant(key, ttl=timedelta(seconds=-1)), "expired"),
    (lambda key: grant(key, Derivation("other-mission", ("notes",), ("notes:n1",))), "mission-mismatch"),
    (lambda key: {**grant(key), "wrappedKey": "***"}, "malformed"),
])
async def test_without_a_usable_grant_encrypted_inputs_are_not_read(
        pool: asyncpg.Pool, rsa_key: rsa.RSAPrivateKey, make_grant: Any, reason: str | None) -> None:
    await seed_inputs(pool)
    await insert_rows(pool, {**mission("m1", inputs=inputs(), grant=make_grant(rsa_key)), "created_at": PAST})
    metrics = Metrics()
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, metrics, private_key_pem=pem(rsa_key)) as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.plans_written_back == 1  # the mission still runs, on plaintext inputs only
    system, user = (m["content"] for m in llm.requests[0]["messages"])
    assert "### goals/companionGoals: Laufen" in user and "### notes" not in user
    assert not system.endswith(USER_DATA_NOTICE)
    assert await fetch(pool, "SELECT 1 FROM mana_ai.decrypt_audit") == []
    if reason is not None:
        assert sample(metrics, "mana_ai_grant_skips_total", reason=reason) == 1


async def test_no_key_configured_is_not_configured(pool: asyncpg.Pool, rsa_key: rsa.RSAPrivateKey) -> None:
    await seed_inputs(pool)
    await insert_rows(pool, {**mission("m1", inputs=inputs(), grant=grant(rsa_key)), "created_at": PAST})
    metrics = Metrics()
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, metrics) as runtime:
            await runtime.snapshots.run_cycle()
    assert sample(metrics, "mana_ai_grant_skips_total", reason="not-configured") == 1


# --- the `profile` input: the userContext record ---------------------------------------------------

PROFILE_INPUT = {"module": "profile", "table": "userContext", "id": "singleton"}
PROFILE_DERIVATION = Derivation("m1", ("userContext",), ("userContext:singleton",))
PROFILE_SECRETS = ("Ich laufe gern", "Laufen", "Kaffee")


async def seed_profile(pool: asyncpg.Pool) -> None:
    """The webapp's userContext record; encrypted whole-field, an array and an object among them."""
    mdk = derive_mdk(MASTER, PROFILE_DERIVATION)
    await insert_rows(pool, {**change("userContext", "singleton", "insert", {
        "id": "singleton", "about": enc(mdk, "Ich laufe gern."), "interests": enc(mdk, ["Laufen", "Jazz"]),
        "routine": enc(mdk, {"morgens": "Kaffee"}), "nutrition": "vegetarisch", "goals": None,
        "updatedAt": "2026-04-16T09:00:00.000Z"}), "app_id": "profile", "created_at": PAST})


async def plan_profile_mission(pool: asyncpg.Pool, mission_grant: Any, metrics: Metrics,
                               key: rsa.RSAPrivateKey) -> tuple[str, str]:
    await seed_profile(pool)
    await insert_rows(pool, {**mission("m1", inputs=[PROFILE_INPUT], grant=mission_grant), "created_at": PAST})
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, metrics, private_key_pem=pem(key)) as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.plans_written_back == 1, stats  # the mission runs whether or not the profile is read
    [request] = llm.requests
    system, user = (m["content"] for m in request["messages"])
    return system, user


async def test_granted_profile_is_decrypted_wrapped_and_audited(pool: asyncpg.Pool, rsa_key: rsa.RSAPrivateKey) -> None:
    metrics = Metrics()
    system, user = await plan_profile_mission(pool, grant(rsa_key, PROFILE_DERIVATION), metrics, rsa_key)
    assert system.endswith(USER_DATA_NOTICE)
    assert ("## Verlinkte Inputs\n### profile/userContext: Nutzerprofil\n<user_data>\n"
            'Ich laufe gern.\n["Laufen","Jazz"]\n{"morgens":"Kaffee"}\nvegetarisch\n</user_data>\n\n') in user
    [row] = await written_rows(pool)
    audit = await fetch(pool, "SELECT table_name, record_id, status, reason, iteration_id FROM mana_ai.decrypt_audit")
    assert [tuple(a) for a in audit] == [("userContext", "singleton", "ok", None, row["data"]["iterations"][0]["id"])]
    assert sample(metrics, "mana_ai_decrypts_total", table="userContext") == 3


async def test_without_a_grant_the_profile_is_not_read(pool: asyncpg.Pool, rsa_key: rsa.RSAPrivateKey) -> None:
    system, user = await plan_profile_mission(pool, None, Metrics(), rsa_key)
    assert "_(keine verlinkten Inputs)_" in user and "vegetarisch" not in user and "enc:1:" not in user
    assert not any(secret in system + user for secret in PROFILE_SECRETS)
    assert not system.endswith(USER_DATA_NOTICE)
    assert await fetch(pool, "SELECT 1 FROM mana_ai.decrypt_audit") == []


async def test_profile_not_on_the_allow_list_is_a_scope_violation(
        pool: asyncpg.Pool, rsa_key: rsa.RSAPrivateKey) -> None:
    metrics = Metrics()
    system, user = await plan_profile_mission(pool, grant(rsa_key), metrics, rsa_key)  # notes:n1, tasks:t1 only
    assert "_(keine verlinkten Inputs)_" in user and "vegetarisch" not in user
    assert not any(secret in system + user for secret in PROFILE_SECRETS)
    audit = await fetch(pool, "SELECT table_name, record_id, status, reason FROM mana_ai.decrypt_audit")
    assert [tuple(a) for a in audit] == [("userContext", "singleton", "scope-violation", "record-not-in-grant-allowlist")]
    assert sample(metrics, "mana_ai_grant_scope_violations_total", table="userContext") == 1
    assert sample(metrics, "mana_ai_decrypts_total", table="userContext") == 0
