-- Retention (docs/operations.md, "Retention"): the janitor deletes rows by age in small batches.
-- These indexes let each batch read only the rows it deletes instead of scanning the table.
-- The run ledger needs none: planned rows by finished_at have idx_mission_runs_planned_at (0009),
-- dead ones idx_mission_runs_status (0003).
--
-- Building an index blocks writes to its table until it is built. On a large decrypt_audit,
-- create it beforehand without blocking (the migration then finds it):
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_decrypt_audit_ts ON mana_ai.decrypt_audit (ts);
CREATE INDEX IF NOT EXISTS idx_decrypt_audit_ts ON mana_ai.decrypt_audit (ts);

CREATE INDEX IF NOT EXISTS idx_rejected_rows_rejected_at ON mana_ai.rejected_rows (rejected_at);
