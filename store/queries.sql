-- Every SQL statement of the daemon, by name. `{snapshots}` and `{id_column}` are filled in
-- from the fixed stream definitions in store/streams.py (never from input).

-- name: ensure_cursor
-- Create a stream's refresh cursor at the epoch if it does not exist yet.
INSERT INTO mana_ai.refresh_cursors (stream) VALUES ($1) ON CONFLICT (stream) DO NOTHING;

-- name: lock_cursor
-- Take the stream's cursor for this refresh; another instance refreshing it makes this empty.
SELECT stable_until, stable_id FROM mana_ai.refresh_cursors
WHERE stream = $1 FOR UPDATE SKIP LOCKED;

-- name: horizon
-- The stable horizon: rows created before it are assumed committed (lag >= longest write tx).
SELECT clock_timestamp() - make_interval(secs => $1::float8);

-- name: read_stream_page
-- One page of the ai channel after a (created_at, id) position, in fold order.
SELECT id, user_id, record_id, op, data, field_timestamps, created_at
FROM public.sync_changes
WHERE app_id = 'ai' AND table_name = $1 AND (created_at, id) > ($2::timestamptz, $3::uuid)
ORDER BY created_at, id
LIMIT $4;

-- name: load_snapshots
-- The stored snapshots of the given (user, record) keys.
SELECT s.user_id, s.{id_column} AS record_id, s.record, s.tombstone, s.stable_record, s.stable_tombstone
FROM {snapshots} s
JOIN unnest($1::text[], $2::text[]) AS k(user_id, record_id)
  ON s.user_id = k.user_id AND s.{id_column} = k.record_id;

-- name: upsert_snapshots
-- Write folded snapshots in one statement; `inserted` tells new from updated.
INSERT INTO {snapshots} AS s
  (user_id, {id_column}, record, tombstone, stable_record, stable_tombstone, last_applied_at, updated_at)
SELECT x.user_id, x.record_id, x.record::jsonb, x.tombstone, x.stable_record::jsonb,
       x.stable_tombstone, x.last_applied_at, now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::bool[], $7::timestamptz[])
  AS x(user_id, record_id, record, tombstone, stable_record, stable_tombstone, last_applied_at)
ON CONFLICT (user_id, {id_column}) DO UPDATE SET
  record = EXCLUDED.record,
  tombstone = EXCLUDED.tombstone,
  stable_record = EXCLUDED.stable_record,
  stable_tombstone = EXCLUDED.stable_tombstone,
  last_applied_at = GREATEST(s.last_applied_at, EXCLUDED.last_applied_at),
  updated_at = now()
RETURNING (xmax = 0) AS inserted;

-- name: advance_cursor
-- Move a stream's stable cursor to the last row folded into stable_record.
UPDATE mana_ai.refresh_cursors SET stable_until = $2, stable_id = $3, updated_at = now()
WHERE stream = $1;

-- name: due_missions
-- Reference §5.1, plus: a nextRunAt that is not a string never makes a mission due, and
-- tombstoned snapshots are skipped.
SELECT user_id, mission_id, record
FROM mana_ai.mission_snapshots
WHERE record->>'state' = 'active'
  AND record->>'nextRunAt' IS NOT NULL
  AND jsonb_typeof(record->'nextRunAt') = 'string'
  AND record->>'nextRunAt' <= $1
  AND (record->>'deletedAt') IS NULL
  AND NOT tombstone;

-- name: ping
-- Liveness probe of the database.
SELECT 1;

-- name: sync_changes_exists
-- Whether mana-sync's table is there (embedded mode creates it otherwise).
SELECT to_regclass('public.sync_changes') IS NOT NULL;

-- name: migrate_lock
-- Serialise migrations across processes for the rest of the transaction.
SELECT pg_advisory_xact_lock(hashtext('mana_ai.migrate'));

-- name: create_migrations_table
-- The schema-version table; created before any migration runs.
CREATE SCHEMA IF NOT EXISTS mana_ai;
CREATE TABLE IF NOT EXISTS mana_ai.schema_migrations (
  version    INT PRIMARY KEY,
  name       TEXT NOT NULL,
  applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- name: applied_migrations
-- Versions already applied.
SELECT version FROM mana_ai.schema_migrations ORDER BY version;

-- name: record_migration
-- Mark one migration applied.
INSERT INTO mana_ai.schema_migrations (version, name) VALUES ($1, $2);
