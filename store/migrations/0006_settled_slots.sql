-- A snapshot remembers the due slot (nextRunAt) that was settled — planned, or dead — so the
-- due query reads only missions whose current slot is still open. Without it, every mission
-- whose nextRunAt lies in the past but was already planned (waiting for the device to move it)
-- would be read and joined on every cycle.
ALTER TABLE mana_ai.mission_snapshots ADD COLUMN IF NOT EXISTS settled_slot TEXT;

UPDATE mana_ai.mission_snapshots s SET settled_slot = r.due_slot
FROM mana_ai.mission_runs r
WHERE r.user_id = s.user_id AND r.mission_id = s.mission_id AND r.due_slot = s.record->>'nextRunAt'
  AND r.status IN ('planned', 'dead');

CREATE INDEX IF NOT EXISTS idx_mission_snapshots_open_slot
  ON mana_ai.mission_snapshots ((record->>'nextRunAt'))
  WHERE record->>'state' = 'active' AND NOT tombstone
    AND (record->>'nextRunAt') IS DISTINCT FROM settled_slot;
