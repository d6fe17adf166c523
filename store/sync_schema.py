"""Which generation of mana-sync's `sync_changes` table the daemon talks to, and the SQL that
depends on it (pure: no I/O here).

mana-sync renamed `field_timestamps` to `field_meta` in its field-meta overhaul (same `{field:
ISO}` map) and added `origin` and `space_id`. A database created before
the overhaul keeps `field_timestamps` and only gains the new columns. The daemon inspects the
columns once at start and then:

  generation      stamps column       write-back row
  v0.6            field_timestamps    data/stamps carry `iterations` and `updatedAt`
  transitional    field_timestamps    the v0.6 row plus `origin = 'agent'`
  field-meta      field_meta          data/stamps carry only `iterations`; `origin = 'agent'`

With both stamp columns, `field_meta` (the newer) is the one read and written. Statements that
read the stamps name the column `__stamps__` in `queries.sql` and come from `SyncSchema.sql`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from store.sql import Q

V06, TRANSITIONAL, FIELD_META = "v0.6", "transitional", "field-meta"
# what MANA_AI_SYNC_SCHEMA may ask the embedded database to be created with
EMBEDDED_GENERATIONS = (V06, FIELD_META)

FIELD_TIMESTAMPS, FIELD_META_COLUMN = "field_timestamps", "field_meta"
# what the daemon reads and writes of mana-sync's table besides the stamps (store/sync_changes.sql)
REQUIRED_COLUMNS = ("id", "app_id", "table_name", "record_id", "user_id", "op", "data", "client_id",
                    "created_at", "schema_version", "actor")
_STAMPS_MARKER = "__stamps__"


@dataclass(frozen=True)
class SyncSchema:
    stamps_column: str  # FIELD_TIMESTAMPS or FIELD_META_COLUMN (a fixed identifier, never input)
    origin: bool        # the table has `origin`: write-backs say 'agent'
    space_id: bool = False
    _sql: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def generation(self) -> str:
        if self.stamps_column == FIELD_META_COLUMN:
            return FIELD_META
        return TRANSITIONAL if self.origin else V06

    @property
    def write_variant(self) -> str:
        """Which INSERT `mana_ai.write_backs` runs (migration 0010)."""
        if self.generation == FIELD_META and not self.origin:
            return "field-meta-no-origin"
        return self.generation

    def sql(self, name: str) -> str:
        """Statement `name` of queries.sql with this generation's stamps column."""
        statement = self._sql.get(name)
        if statement is None:
            statement = self._sql[name] = Q[name].replace(_STAMPS_MARKER, self.stamps_column)
        return statement

    @property
    def insert_write_back(self) -> str:
        """The careful path's INSERT of the TypeScript service's write-back row ($1 mission, $2 user,
        $3 data, $4 stamps, $5 actor); id and created_at by DB defaults."""
        statement = self._sql.get("insert_write_back")
        if statement is None:
            origin_column, origin_value = (", origin", ", 'agent'") if self.origin else ("", "")
            statement = self._sql["insert_write_back"] = (
                "INSERT INTO public.sync_changes (app_id, table_name, record_id, user_id, op, data, "
                f"{self.stamps_column}, client_id, schema_version, actor{origin_column}) "
                "VALUES ('ai', 'aiMissions', $1, $2, 'update', $3::jsonb, $4::jsonb, 'mana-ai-runner', 1, "
                f"$5::jsonb{origin_value})")
        return statement

    def write_back_row(self, iterations: list[Any], now_iso: str) -> tuple[dict[str, Any], dict[str, str]]:
        """(data, stamps) of a write-back: the TypeScript service's row of this generation (pure)."""
        if self.generation == FIELD_META:  # after the overhaul no synced `updatedAt`
            return {"iterations": iterations}, {"iterations": now_iso}
        return {"iterations": iterations, "updatedAt": now_iso}, {"iterations": now_iso, "updatedAt": now_iso}

    def as_json(self) -> dict[str, Any]:
        """How /health and the start-up line describe it."""
        return {"generation": self.generation, "stampsColumn": self.stamps_column, "origin": self.origin,
                "spaceId": self.space_id}


V0_6_SCHEMA = SyncSchema(FIELD_TIMESTAMPS, origin=False)


def detect_sync_schema(columns: set[str]) -> SyncSchema | str:
    """The generation of `public.sync_changes` with these columns, or why it cannot be used."""
    if not columns:
        return ("public.sync_changes does not exist: start mana-sync first (it creates the table), "
                "or unset SYNC_DATABASE_URL to use the embedded database")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if FIELD_META_COLUMN not in columns and FIELD_TIMESTAMPS not in columns:
        missing.append(f"{FIELD_META_COLUMN} (or {FIELD_TIMESTAMPS})")
    if missing:
        return (f"public.sync_changes lacks column(s) {', '.join(missing)}: upgrade mana-sync "
                "(its migration adds them), or unset SYNC_DATABASE_URL to use the embedded database")
    stamps = FIELD_META_COLUMN if FIELD_META_COLUMN in columns else FIELD_TIMESTAMPS
    return SyncSchema(stamps, origin="origin" in columns, space_id="space_id" in columns)

