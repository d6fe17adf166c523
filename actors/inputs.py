"""Resolve a mission's inputs for its prompt as the TypeScript service does: grant → replay →
decrypt → audit.

Encrypted inputs are read only under a valid key grant and only if the record is on the grant's
allow-list; every attempt to read one is audited (`mana_ai.decrypt_audit`, with the run's
iteration id), all rows of a run in one transaction. Decrypted content is wrapped in
`<user_data>` tags before it reaches the prompt (the TypeScript service put it in raw). The MDK
lives only for this call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from grants import CipherError, GrantRefused, MissionKey, Unwrapped, audit_reason, decrypt_fields, unwrap_grant
from observability.metrics import Metrics
from planner.inputs import RESOLVERS, InputRef, resolved_input
from planner.prompt import ResolvedInput
from store.records import Mission
from store.sync_schema import V0_6_SCHEMA, SyncSchema
from store.replay import AuditEntry, RecordKey, replay_records, write_decrypt_audit

log = logging.getLogger(__name__)

SCOPE_VIOLATION_REASON = "record-not-in-grant-allowlist"


@dataclass(frozen=True)
class Inputs:
    inputs: tuple[ResolvedInput, ...]
    wrapped: bool  # some content was decrypted (and wrapped): the prompt says how to treat it


class InputResolver:
    def __init__(self, pool: asyncpg.Pool, key: MissionKey | None, metrics: Metrics, *,
                 sync: SyncSchema = V0_6_SCHEMA) -> None:
        self._pool = pool
        self._sync = sync
        self._key = key  # None: MANA_AI_PRIVATE_KEY_PEM unset or unusable, grants disabled
        self._metrics = metrics

    async def resolve(self, mission: Mission, iteration_id: str, now: datetime) -> Inputs:
        refs = [ref for ref in map(InputRef.parse, mission.inputs) if ref is not None and ref.module in RESOLVERS]
        grant = self._unwrap(mission, now) if mission.grant is not None else None
        audit: list[AuditEntry] = []
        wanted: dict[InputRef, RecordKey] = {}
        for ref in refs:
            resolver = RESOLVERS[ref.module]
            if resolver.encrypted:
                if grant is None:
                    continue  # no grant: encrypted inputs are not read at all
                if ref.scope_key not in grant.allowlist:
                    self._metrics.grant_scope_violations.labels(table=ref.table).inc()
                    audit.append(AuditEntry(ref.table, ref.id, "scope-violation", SCOPE_VIOLATION_REASON))
                    continue
            wanted[ref] = (resolver.app_id, ref.table, ref.id)
        records = await replay_records(self._pool, mission.user_id, list(wanted.values()), sync=self._sync)
        resolved: list[ResolvedInput] = []
        wrapped = False
        for ref, key in wanted.items():
            record = records.get(key)
            if record is None:
                continue
            resolver = RESOLVERS[ref.module]
            if not resolver.encrypted:
                resolved.append(resolved_input(ref, resolver, record, wrap=False))
                continue
            assert grant is not None
            try:
                decrypted = decrypt_fields(grant.mdk, record)
            except CipherError as exc:
                audit.append(AuditEntry(ref.table, ref.id, "failed", audit_reason(exc)))
                continue
            if decrypted.fields:
                self._metrics.decrypts.labels(table=ref.table).inc(len(decrypted.fields))
            audit.append(AuditEntry(ref.table, ref.id, "ok", None))  # also with no encrypted field
            resolved.append(resolved_input(ref, resolver, decrypted.record, wrap=bool(decrypted.fields)))
            wrapped = wrapped or bool(decrypted.fields)
        # the audit is written before any decrypted text goes anywhere; if it cannot be written,
        # this raises and the run fails (and is retried) rather than use unaudited content
        await write_decrypt_audit(self._pool, mission.user_id, mission.id, iteration_id, audit)
        return Inputs(tuple(resolved), wrapped)

    def _unwrap(self, mission: Mission, now: datetime) -> Unwrapped | None:
        result = unwrap_grant(self._key, mission.grant, mission_id=mission.id, now=now)
        if isinstance(result, GrantRefused):
            self._metrics.grant_skips.labels(reason=result.reason).inc()
            log.info("mission.grant_skipped", extra={"mission": mission.id, "user": mission.user_id,
                                                     "reason": result.reason})
            return None
        return result
