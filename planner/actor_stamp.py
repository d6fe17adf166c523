"""The actor stamp: who wrote a ``sync_changes`` row, stored in its ``actor`` column (as shared-ai's
``actor.ts`` builds it). A value written into rows, unrelated to the runtime's actors (``actors/``).

Actors are JSON on the wire, so they are plain dicts (TypedDicts) with the TypeScript service's key
order: ``kind, principalId, displayName`` and, for AI actors, ``missionId, iterationId,
rationale``. A system actor whose principal has no default name has no ``displayName`` key,
which is what ``JSON.stringify`` makes of the TypeScript service's ``undefined``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, NotRequired, TypedDict, cast

__all__ = [
    "LEGACY_AI_DISPLAY_NAME",
    "LEGACY_AI_PRINCIPAL",
    "LEGACY_DISPLAY_NAME",
    "LEGACY_SYSTEM_PRINCIPAL",
    "LEGACY_USER_PRINCIPAL",
    "SYSTEM_MIGRATION",
    "SYSTEM_MISSION_RUNNER",
    "SYSTEM_PROJECTION",
    "SYSTEM_RULE",
    "SYSTEM_STREAM",
    "USER_ACTOR",
    "Actor",
    "AiActor",
    "SystemActor",
    "UserActor",
    "is_ai_actor",
    "is_from_mission_runner",
    "is_system_actor",
    "is_user_actor",
    "make_agent_actor",
    "make_system_actor",
    "make_user_actor",
    "mission_runner_actor",
    "normalize_actor",
]

SYSTEM_PROJECTION = "system:projection"
SYSTEM_RULE = "system:rule"
SYSTEM_MIGRATION = "system:migration"
SYSTEM_STREAM = "system:stream"
SYSTEM_MISSION_RUNNER = "system:mission-runner"

LEGACY_USER_PRINCIPAL = "legacy:user"
LEGACY_AI_PRINCIPAL = "legacy:ai-default"
LEGACY_SYSTEM_PRINCIPAL = "legacy:system"
LEGACY_DISPLAY_NAME = "Unbekannt"

#: The default agent's display name, stamped on missions without a (known) agent.
LEGACY_AI_DISPLAY_NAME = "Mana"

_SYSTEM_DISPLAY_NAMES: Mapping[str, str] = {
    SYSTEM_PROJECTION: "Projektion",
    SYSTEM_RULE: "Regel",
    SYSTEM_MIGRATION: "Migration",
    SYSTEM_STREAM: "Event-Stream",
    SYSTEM_MISSION_RUNNER: "Mission-Runner",
}


class UserActor(TypedDict):
    kind: Literal["user"]
    principalId: str
    displayName: str


class AiActor(TypedDict):
    kind: Literal["ai"]
    principalId: str
    displayName: str
    missionId: str
    iterationId: str
    rationale: str


class SystemActor(TypedDict):
    kind: Literal["system"]
    principalId: str
    displayName: NotRequired[str]


Actor = UserActor | AiActor | SystemActor


def make_user_actor(user_id: str, display_name: str = "Du") -> UserActor:
    return {"kind": "user", "principalId": user_id, "displayName": display_name}


def make_agent_actor(
    agent_id: str, display_name: str, mission_id: str, iteration_id: str, rationale: str
) -> AiActor:
    return {
        "kind": "ai",
        "principalId": agent_id,
        "displayName": display_name,
        "missionId": mission_id,
        "iterationId": iteration_id,
        "rationale": rationale,
    }


def make_system_actor(principal_id: str, display_name: str | None = None) -> SystemActor:
    """A system actor; the display name defaults per known principal (none for others)."""
    name = display_name if display_name is not None else _SYSTEM_DISPLAY_NAMES.get(principal_id)
    if name is None:
        return {"kind": "system", "principalId": principal_id}
    return {"kind": "system", "principalId": principal_id, "displayName": name}


#: The TypeScript service's placeholder user actor; read-only (copy it with ``dict()`` to send it).
USER_ACTOR: Mapping[str, str] = MappingProxyType(
    {"kind": "user", "principalId": LEGACY_USER_PRINCIPAL, "displayName": "Du"}
)


def mission_runner_actor(
    agent: tuple[str, str] | None, mission_id: str, iteration_id: str | None, objective: str
) -> Actor:
    """The actor on a write-back row: the agent ``(id, name)``, else the legacy default agent;
    without an iteration id (unreachable in a run) the mission-runner system actor."""
    if not iteration_id:
        return make_system_actor(SYSTEM_MISSION_RUNNER)
    agent_id, name = agent if agent is not None else (LEGACY_AI_PRINCIPAL, LEGACY_AI_DISPLAY_NAME)
    return make_agent_actor(agent_id, name, mission_id, iteration_id, objective)


def normalize_actor(raw: object) -> Actor:
    """Read any stored actor blob as an ``Actor``; never raises.

    Valid actors (string ``principalId`` and ``displayName``) are returned as they are, the
    same object, as in the TypeScript service. Missing fields get the legacy sentinels; the old
    ``{"kind": "system", "source": "x"}`` shape becomes principal ``system:x``. Deviation: the
    TypeScript service fills only null/undefined fields (``??``) and would keep, say, a numeric
    ``principalId``; we treat any non-string as missing so the result is always well typed.
    """
    if not isinstance(raw, Mapping):
        return make_user_actor(LEGACY_USER_PRINCIPAL, LEGACY_DISPLAY_NAME)
    kind = raw.get("kind")
    valid = isinstance(raw.get("principalId"), str) and isinstance(raw.get("displayName"), str)
    if kind == "user":
        if valid:
            return cast(UserActor, raw)
        return make_user_actor(
            _str(raw, "principalId", LEGACY_USER_PRINCIPAL), _str(raw, "displayName", "Du")
        )
    if kind == "ai":
        if valid:
            return cast(AiActor, raw)
        return make_agent_actor(
            _str(raw, "principalId", LEGACY_AI_PRINCIPAL),
            _str(raw, "displayName", LEGACY_DISPLAY_NAME),
            _str(raw, "missionId", ""),
            _str(raw, "iterationId", ""),
            _str(raw, "rationale", ""),
        )
    if kind == "system":
        if valid:
            return cast(SystemActor, raw)
        source = raw.get("source")
        return make_system_actor(
            f"system:{source}" if isinstance(source, str) else LEGACY_SYSTEM_PRINCIPAL
        )
    return make_user_actor(LEGACY_USER_PRINCIPAL, LEGACY_DISPLAY_NAME)


def _str(raw: Mapping[object, object], key: str, default: str) -> str:
    value = raw.get(key)
    return value if isinstance(value, str) else default


def is_user_actor(actor: Mapping[str, object] | None) -> bool:
    return actor is not None and actor.get("kind") == "user"


def is_ai_actor(actor: Mapping[str, object] | None) -> bool:
    return actor is not None and actor.get("kind") == "ai"


def is_system_actor(actor: Mapping[str, object] | None) -> bool:
    return actor is not None and actor.get("kind") == "system"


def is_from_mission_runner(actor: Mapping[str, object] | None) -> bool:
    """True only for the mission-runner system actor, not other system writers."""
    if actor is None:
        return False
    return actor.get("kind") == "system" and actor.get("principalId") == SYSTEM_MISSION_RUNNER
