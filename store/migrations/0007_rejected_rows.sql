-- Rows of sync_changes the snapshot refresh skipped because they cannot be decoded or stored
-- ("poison" rows: JSON nested too deep, numbers no double holds, huge strings or rows, ids or
-- nextRunAt past an index's row limit; store/bounds.py). One row per sync_changes row, written
-- in the refresh transaction that moves the cursor past it, so each is recorded once.
-- Ids are cut to MANA_AI_MAX_ID_CHARS; `detail` names sizes and limits, never content.
CREATE TABLE IF NOT EXISTS mana_ai.rejected_rows (
  change_id   UUID PRIMARY KEY,           -- sync_changes.id
  table_name  TEXT NOT NULL,
  user_id     TEXT NOT NULL,
  record_id   TEXT NOT NULL,
  reason      TEXT NOT NULL,
  detail      TEXT NOT NULL,
  row_bytes   BIGINT NOT NULL,            -- data + field_timestamps as text
  changed_at  TIMESTAMPTZ NOT NULL,       -- sync_changes.created_at
  rejected_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- listed newest change first, everyone's or one user's (GET /internal/rejected)
CREATE INDEX IF NOT EXISTS idx_rejected_rows_changed ON mana_ai.rejected_rows (changed_at DESC, change_id DESC);
CREATE INDEX IF NOT EXISTS idx_rejected_rows_user ON mana_ai.rejected_rows (user_id, changed_at DESC, change_id DESC);
