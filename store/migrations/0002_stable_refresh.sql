-- Our refresh state. The snapshot keeps two folds of its record:
--   stable_record: every row up to the stream's stable cursor (never read again),
--   record:        stable_record plus the rows newer than the cursor (the "tail"),
-- so a late-committing row inside the lag window is still folded in commit order.
-- Tombstones stay as rows so a deleted record is never replayed.
ALTER TABLE mana_ai.mission_snapshots
  ADD COLUMN IF NOT EXISTS tombstone        BOOLEAN NOT NULL DEFAULT false,
  ADD COLUMN IF NOT EXISTS stable_record    JSONB,
  ADD COLUMN IF NOT EXISTS stable_tombstone BOOLEAN NOT NULL DEFAULT false;

ALTER TABLE mana_ai.agent_snapshots
  ADD COLUMN IF NOT EXISTS tombstone        BOOLEAN NOT NULL DEFAULT false,
  ADD COLUMN IF NOT EXISTS stable_record    JSONB,
  ADD COLUMN IF NOT EXISTS stable_tombstone BOOLEAN NOT NULL DEFAULT false;

-- One cursor per folded stream: (created_at, id) of the last row folded into stable_record.
CREATE TABLE IF NOT EXISTS mana_ai.refresh_cursors (
  stream        TEXT PRIMARY KEY,
  stable_until  TIMESTAMPTZ NOT NULL DEFAULT 'epoch',
  stable_id     UUID NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
  updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The refresh reads the ai channel in (created_at, id) order after the cursor; without this
-- index every cycle would scan the whole log. sync_changes belongs to mana-sync: if our role
-- may not index it, carry on (slower) and say so. On a large live table, create it first by
-- hand with CREATE INDEX CONCURRENTLY under the same name (docs/operations.md).
DO $$
BEGIN
  CREATE INDEX IF NOT EXISTS idx_sync_changes_mana_ai_stream
    ON public.sync_changes (table_name, created_at, id)
    WHERE app_id = 'ai';
EXCEPTION WHEN insufficient_privilege THEN
  RAISE WARNING 'mana-ai: no privilege to create idx_sync_changes_mana_ai_stream; refresh will scan sync_changes';
END
$$;
