-- Dead slots not discarded, in byte-wise key order: the dead-slot list (`GET /internal/dead-slots`)
-- pages through it, and bulk retry/discard take it in batches, without reading planned rows. The
-- order is the one lock order of every statement that locks several mission_runs rows.
--
-- Building an index blocks writes to its table until it is built. On a large ledger, create it
-- beforehand without blocking (the migration then finds it):
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_mission_runs_dead_open ON mana_ai.mission_runs
--     (user_id COLLATE "C", mission_id COLLATE "C", due_slot COLLATE "C")
--     WHERE status = 'dead' AND discarded_at IS NULL;
CREATE INDEX IF NOT EXISTS idx_mission_runs_dead_open ON mana_ai.mission_runs
  (user_id COLLATE "C", mission_id COLLATE "C", due_slot COLLATE "C")
  WHERE status = 'dead' AND discarded_at IS NULL;
