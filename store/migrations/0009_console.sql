-- The operator console (docs/console.md). A dead slot an operator *discards* stays dead (it is
-- never due again) but leaves the console's list and the `dead` gauge; a retry clears it again.
ALTER TABLE mana_ai.mission_runs ADD COLUMN IF NOT EXISTS discarded_at TIMESTAMPTZ;

-- Planned slots by when they were planned: the console's missions-per-minute chart and its
-- "planned in the last 24 h" count read a range of it, never the whole ledger.
CREATE INDEX IF NOT EXISTS idx_mission_runs_planned_at
  ON mana_ai.mission_runs (finished_at) WHERE status = 'planned';
