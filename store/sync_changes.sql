-- mana-sync's DDL for public.sync_changes, used only in embedded mode.
CREATE TABLE IF NOT EXISTS sync_changes (
  id               UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  app_id           TEXT NOT NULL,
  table_name       TEXT NOT NULL,
  record_id        TEXT NOT NULL,
  user_id          TEXT NOT NULL,
  op               TEXT NOT NULL CHECK (op IN ('insert','update','delete')),
  data             JSONB,
  field_timestamps JSONB DEFAULT '{}',
  client_id        TEXT NOT NULL,
  created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
  schema_version   INT NOT NULL DEFAULT 1,
  actor            JSONB
);
ALTER TABLE sync_changes ADD COLUMN IF NOT EXISTS schema_version INT NOT NULL DEFAULT 1;
ALTER TABLE sync_changes ADD COLUMN IF NOT EXISTS actor JSONB;
CREATE INDEX IF NOT EXISTS idx_sync_changes_user_app     ON sync_changes (user_id, app_id, created_at);
CREATE INDEX IF NOT EXISTS idx_sync_changes_table_record ON sync_changes (table_name, record_id, created_at);
CREATE INDEX IF NOT EXISTS idx_sync_changes_since        ON sync_changes (user_id, app_id, table_name, created_at);
ALTER TABLE sync_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_changes FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS sync_changes_user_isolation ON sync_changes;
CREATE POLICY sync_changes_user_isolation ON sync_changes
  USING      (user_id = current_setting('app.current_user_id', true))
  WITH CHECK (user_id = current_setting('app.current_user_id', true));
