"""The two folded streams of the `ai` channel and where their snapshots live."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stream:
    table_name: str         # sync_changes.table_name (app_id is always 'ai')
    snapshots: str          # snapshot table
    id_column: str          # its record-id column
    honour_deleted_at: bool  # agents vanish on a truthy deletedAt; missions are filtered later

    def query(self, template: str) -> str:
        return template.format(snapshots=self.snapshots, id_column=self.id_column)


MISSIONS = Stream("aiMissions", "mana_ai.mission_snapshots", "mission_id", honour_deleted_at=False)
AGENTS = Stream("agents", "mana_ai.agent_snapshots", "agent_id", honour_deleted_at=True)
