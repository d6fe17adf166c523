-- Every SQL statement of the daemon, by name. `{snapshots}` and `{id_column}` are filled in
-- from the fixed stream definitions in store/streams.py (never from input). `__stamps__` is the
-- stamps column of the sync_changes generation found at start (store/sync_schema.py): such a
-- statement is read through `SyncSchema.sql(name)`, never straight from `Q`.

-- name: ensure_cursor
-- Create a stream's refresh cursor at the epoch if it does not exist yet.
INSERT INTO mana_ai.refresh_cursors (stream) VALUES ($1) ON CONFLICT (stream) DO NOTHING;

-- name: lock_and_read_stream
-- Take the stream's cursor for this refresh and read the first page after it, in one round
-- trip. No row: another instance refreshing the stream holds the cursor (or there is none yet).
-- Otherwise every row carries the cursor and the stable horizon — rows created before it are
-- assumed committed (lag >= longest write tx); SKIP LOCKED never waits, so it is read as the
-- lock is taken — and a row of the page ($3 rows at most, columns as in read_stream_page, texts
-- within $4 bytes); a single row with a NULL `id` when nothing follows the cursor.
WITH k AS MATERIALIZED (
  SELECT stable_until, stable_id, clock_timestamp() - make_interval(secs => $2::float8) AS horizon
  FROM mana_ai.refresh_cursors
  WHERE stream = $1 FOR UPDATE SKIP LOCKED
)
SELECT k.stable_until, k.stable_id, k.horizon, p.*
FROM k LEFT JOIN LATERAL (
  SELECT c.id, c.user_id, c.record_id, c.op, c.created_at, t.row_bytes,
         CASE WHEN t.row_bytes <= $4 THEN t.data END AS data,
         CASE WHEN t.row_bytes <= $4 THEN t.field_timestamps END AS field_timestamps
  FROM public.sync_changes c
  CROSS JOIN LATERAL (
    SELECT d.data, d.field_timestamps,
           COALESCE(octet_length(d.data), 0) + COALESCE(octet_length(d.field_timestamps), 0) AS row_bytes
    FROM (SELECT c.data::text AS data, c.__stamps__::text AS field_timestamps OFFSET 0) d
  ) t
  WHERE c.app_id = 'ai' AND c.table_name = $1 AND (c.created_at, c.id) > (k.stable_until, k.stable_id)
  ORDER BY c.created_at, c.id
  LIMIT $3
) p ON true
ORDER BY p.created_at, p.id;

-- name: read_stream_page
-- One page of the ai channel after a (created_at, id) position, in fold order. `data` and
-- `field_timestamps` come as text, decoded row by row within bounds (store/bounds.py), and not
-- at all when together they exceed $5 bytes (`row_bytes` says how many).
SELECT c.id, c.user_id, c.record_id, c.op, c.created_at, t.row_bytes,
       CASE WHEN t.row_bytes <= $5 THEN t.data END AS data,
       CASE WHEN t.row_bytes <= $5 THEN t.field_timestamps END AS field_timestamps
FROM public.sync_changes c
CROSS JOIN LATERAL (
  SELECT d.data, d.field_timestamps,
         COALESCE(octet_length(d.data), 0) + COALESCE(octet_length(d.field_timestamps), 0) AS row_bytes
  FROM (SELECT c.data::text AS data, c.__stamps__::text AS field_timestamps OFFSET 0) d
) t
WHERE c.app_id = 'ai' AND c.table_name = $1 AND (c.created_at, c.id) > ($2::timestamptz, $3::uuid)
ORDER BY c.created_at, c.id
LIMIT $4;

-- name: insert_rejected_rows
-- Record rows the refresh skipped, once per sync_changes row; the ones recorded now come back.
INSERT INTO mana_ai.rejected_rows
  (change_id, table_name, user_id, record_id, reason, detail, row_bytes, changed_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::bigint[], $8::timestamptz[])
ON CONFLICT (change_id) DO NOTHING
RETURNING change_id;

-- name: load_snapshots
-- The stored snapshots of the given (user, record) keys.
SELECT s.user_id, s.{id_column} AS record_id, s.record, s.tombstone, s.stable_record, s.stable_tombstone
FROM {snapshots} s
JOIN unnest($1::text[], $2::text[]) AS k(user_id, record_id)
  ON s.user_id = k.user_id AND s.{id_column} = k.record_id;

-- name: upsert_snapshots
-- Write folded snapshots in one statement; `inserted` tells new from updated. A NULL `record`
-- means "the same as stable_record" (no tail rows): that JSON is sent and parsed only once
-- (the array casts parse each element once; the columns of unnest are computed once per row).
-- Every array is text[]: asyncpg has a built-in codec for it, while any other array type
-- costs a type-introspection query (~20 ms) the first time each pooled connection meets it.
-- Unless $9 is NULL, the same statement moves stream $8's cursor to ($9, $10), past the stable
-- rows just folded (advance_cursor without a round trip of its own).
WITH advanced AS (
  UPDATE mana_ai.refresh_cursors SET stable_until = $9, stable_id = $10, updated_at = now()
  WHERE stream = $8 AND $9::timestamptz IS NOT NULL
)
INSERT INTO {snapshots} AS s
  (user_id, {id_column}, record, tombstone, stable_record, stable_tombstone, last_applied_at, updated_at)
SELECT x.user_id, x.record_id, COALESCE(x.record, x.stable_record), x.tombstone, x.stable_record,
       x.stable_tombstone, x.last_applied_at, now()
FROM unnest($1::text[], $2::text[], $3::text[]::jsonb[], $4::text[]::bool[], $5::text[]::jsonb[],
            $6::text[]::bool[], $7::text[]::timestamptz[])
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
-- Move a stream's stable cursor to the last row folded into stable_record (when no snapshot is
-- written with it: upsert_snapshots moves it otherwise).
UPDATE mana_ai.refresh_cursors SET stable_until = $2, stable_id = $3, updated_at = now()
WHERE stream = $1;

-- name: rejected_rows_all
-- Rows the refresh skipped, the newest changes first (inspection).
SELECT change_id, table_name, user_id, record_id, reason, detail, row_bytes, changed_at, rejected_at
FROM mana_ai.rejected_rows
ORDER BY changed_at DESC, change_id DESC
LIMIT $1;

-- name: rejected_rows_of_user
-- One user's rows the refresh skipped, the newest changes first (inspection).
SELECT change_id, table_name, user_id, record_id, reason, detail, row_bytes, changed_at, rejected_at
FROM mana_ai.rejected_rows
WHERE user_id = $1
ORDER BY changed_at DESC, change_id DESC
LIMIT $2;

-- name: due_missions
-- The TypeScript service's selection, plus: nextRunAt is compared as an instant (next_run_at, read from it by
-- mana_ai.instant_of; a value that names no instant never makes a mission due), tombstones
-- are skipped, and the run ledger decides per due slot (= the nextRunAt text): no row yet, a retry
-- whose backoff has passed, or a running claim whose lease expired. Settled slots (planned, dead)
-- are left out by idx_mission_snapshots_open_due. Oldest first, at most $2 per cycle.
SELECT s.user_id, s.mission_id, s.record, s.last_applied_at
FROM mana_ai.mission_snapshots s
LEFT JOIN mana_ai.mission_runs r
  ON r.user_id = s.user_id AND r.mission_id = s.mission_id AND r.due_slot = s.record->>'nextRunAt'
WHERE s.record->>'state' = 'active'
  AND NOT s.tombstone
  AND (s.record->>'nextRunAt') IS DISTINCT FROM s.settled_slot
  AND s.next_run_at IS NOT NULL
  AND s.next_run_at <= $1::timestamptz
  AND (s.record->>'deletedAt') IS NULL
  AND (r.user_id IS NULL
       OR (r.status = 'retry' AND r.next_attempt_at <= now())
       OR (r.status = 'running' AND r.lease_expires_at < now()))
ORDER BY s.next_run_at
LIMIT $2;

-- name: due_missions_folded
-- due_missions for a pass between the pages of a refresh (actors/snapshot.py): only missions
-- with no ai row after ($3, $4), the last row the refresh has read and folded. A mission with a
-- row not folded yet has a snapshot that may still change (paused, moved, deleted) in this
-- refresh, so it waits for a later pass.
SELECT s.user_id, s.mission_id, s.record, s.last_applied_at
FROM mana_ai.mission_snapshots s
LEFT JOIN mana_ai.mission_runs r
  ON r.user_id = s.user_id AND r.mission_id = s.mission_id AND r.due_slot = s.record->>'nextRunAt'
WHERE s.record->>'state' = 'active'
  AND NOT s.tombstone
  AND (s.record->>'nextRunAt') IS DISTINCT FROM s.settled_slot
  AND s.next_run_at IS NOT NULL
  AND s.next_run_at <= $1::timestamptz
  AND (s.record->>'deletedAt') IS NULL
  AND (r.user_id IS NULL
       OR (r.status = 'retry' AND r.next_attempt_at <= now())
       OR (r.status = 'running' AND r.lease_expires_at < now()))
  AND NOT EXISTS (
    SELECT 1 FROM public.sync_changes c
    WHERE c.table_name = 'aiMissions' AND c.record_id = s.mission_id AND c.created_at >= $3
      AND c.app_id = 'ai' AND c.user_id = s.user_id
      AND (c.created_at, c.id) > ($3::timestamptz, $4::uuid))
ORDER BY s.next_run_at
LIMIT $2;

-- name: claim_runs
-- Claim due slots for this instance in one statement; only rows actually claimed come back.
-- Another instance's live lease, a planned or dead slot, or a retry still backing off is left alone.
-- Rows are taken (and existing ones locked) in primary-key order, byte-wise: the one lock order of
-- every statement that locks several mission_runs rows (renew_leases, release_claims, the
-- write-back batch), so that two of them never deadlock.
INSERT INTO mana_ai.mission_runs AS r
  (user_id, mission_id, due_slot, status, attempts, lease_owner, lease_token, lease_expires_at)
SELECT x.user_id, x.mission_id, x.due_slot, 'running', 1, $4, gen_random_uuid(),
       now() + make_interval(secs => $5::float8)
FROM unnest($1::text[], $2::text[], $3::text[]) AS x(user_id, mission_id, due_slot)
ORDER BY x.user_id COLLATE "C", x.mission_id COLLATE "C", x.due_slot COLLATE "C"
ON CONFLICT (user_id, mission_id, due_slot) DO UPDATE SET
  status = 'running',
  attempts = r.attempts + 1,
  lease_owner = EXCLUDED.lease_owner,
  lease_token = EXCLUDED.lease_token,
  lease_expires_at = EXCLUDED.lease_expires_at,
  updated_at = now()
WHERE (r.status = 'retry' AND r.next_attempt_at <= now())
   OR (r.status = 'running' AND r.lease_expires_at < now())
RETURNING r.user_id, r.mission_id, r.due_slot, r.lease_token, r.attempts;

-- name: renew_leases
-- Extend the leases of every claim this instance holds, in one statement (the lease keeper, every
-- third of a lease). The tokens that come back are still held; any other was lost (taken over
-- after it expired) or settled meanwhile. Rows are found by primary key, tokens fence them, and
-- they are locked first, in primary-key order (see claim_runs), before any is updated.
WITH mine AS MATERIALIZED (
  SELECT r.user_id, r.mission_id, r.due_slot
  FROM mana_ai.mission_runs r
  JOIN unnest($1::text[], $2::text[], $3::text[], $4::uuid[]) AS x(user_id, mission_id, due_slot, lease_token)
    ON r.user_id = x.user_id AND r.mission_id = x.mission_id AND r.due_slot = x.due_slot
   AND r.lease_token = x.lease_token
  WHERE r.status = 'running'
  ORDER BY r.user_id COLLATE "C", r.mission_id COLLATE "C", r.due_slot COLLATE "C"
  FOR UPDATE OF r
)
UPDATE mana_ai.mission_runs AS r
SET lease_expires_at = now() + make_interval(secs => $5::float8), updated_at = now()
FROM mine
WHERE r.user_id = mine.user_id AND r.mission_id = mine.mission_id AND r.due_slot = mine.due_slot
RETURNING r.lease_token;

-- name: release_claim
-- Give a claim back without it counting as an attempt (a skip, or shutdown): due again at once.
UPDATE mana_ai.mission_runs
SET status = 'retry', attempts = GREATEST(attempts - 1, 0), next_attempt_at = now(),
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, outcome = $5, updated_at = now()
WHERE user_id = $1 AND mission_id = $2 AND due_slot = $3 AND lease_token = $4 AND status = 'running';

-- name: fail_run
-- A failed attempt: back off ($6 seconds), or mark the slot dead after $5 attempts; keep history.
-- A dead slot is settled on the snapshot too.
WITH run AS (
UPDATE mana_ai.mission_runs
SET status = CASE WHEN attempts >= $5 THEN 'dead' ELSE 'retry' END,
    next_attempt_at = CASE WHEN attempts >= $5 THEN NULL
                           ELSE now() + make_interval(secs => $6::float8) END,
    finished_at = CASE WHEN attempts >= $5 THEN now() ELSE NULL END,
    outcome = $8,
    last_error = $7,
    error_history = error_history || jsonb_build_array(jsonb_build_object(
      'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
      'attempt', attempts, 'outcome', $8::text, 'error', $7::text, 'instance', lease_owner)),
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
WHERE user_id = $1 AND mission_id = $2 AND due_slot = $3 AND lease_token = $4 AND status = 'running'
RETURNING user_id, mission_id, due_slot, status, attempts, next_attempt_at
), settled AS (
  UPDATE mana_ai.mission_snapshots s SET settled_slot = run.due_slot
  FROM run WHERE run.status = 'dead' AND s.user_id = run.user_id AND s.mission_id = run.mission_id
)
SELECT status, attempts, next_attempt_at FROM run;

-- name: mark_planned
-- The slot is planned: record the iteration and the plan's provenance (planner mode and rounds
-- too), drop the lease; the snapshot's slot is settled.
WITH settled AS (
  UPDATE mana_ai.mission_snapshots SET settled_slot = $3 WHERE user_id = $1 AND mission_id = $2
)
UPDATE mana_ai.mission_runs
SET status = 'planned', outcome = $5, iteration_id = $6, prompt_tokens = $7, completion_tokens = $8,
    model = $9, prompt_hash = $10, snapshot_cursor = $11, planner_mode = $12, planner_rounds = $13,
    last_error = NULL,
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
    finished_at = now(), updated_at = now()
WHERE user_id = $1 AND mission_id = $2 AND due_slot = $3 AND lease_token = $4 AND status = 'running';

-- name: mission_snapshot
-- One mission's current snapshot (the base of the freshest iterations).
SELECT record, tombstone, last_applied_at FROM mana_ai.mission_snapshots
WHERE user_id = $1 AND mission_id = $2;

-- name: mission_rows_after
-- A mission's rows newer than its snapshot, in fold order (inside withUser).
SELECT id, user_id, record_id, op, data, __stamps__ AS field_timestamps, created_at
FROM public.sync_changes
WHERE user_id = $1 AND app_id = 'ai' AND table_name = 'aiMissions' AND record_id = $2
  AND created_at > $3
ORDER BY created_at, id;

-- name: agents_of_users
-- Agent snapshots of the given users (live ones are filtered when read).
SELECT user_id, agent_id, record, tombstone FROM mana_ai.agent_snapshots
WHERE user_id = ANY($1::text[]);

-- name: ping
-- Liveness probe of the database.
SELECT 1;

-- name: sync_changes_exists
-- Whether mana-sync's table is there (embedded mode creates it otherwise).
SELECT to_regclass('public.sync_changes') IS NOT NULL;

-- name: sync_changes_columns
-- The columns of mana-sync's table (none when it does not exist), checked before migrating.
SELECT attname FROM pg_attribute
WHERE attrelid = to_regclass('public.sync_changes') AND attnum > 0 AND NOT attisdropped;

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

-- name: budget_lock
-- Serialise budget checks of one agent for the rest of the transaction.
SELECT pg_advisory_xact_lock(hashtext('mana_ai.budget/' || $1 || '/' || $2));

-- name: usage_24h
-- An agent's rolling 24 h use: used tokens plus reservations younger than $3 seconds.
SELECT COALESCE(sum(CASE WHEN status = 'reserved' THEN reserved_tokens
                         ELSE prompt_tokens + completion_tokens END), 0)::bigint AS used,
       COALESCE(sum(prompt_tokens + completion_tokens) FILTER (WHERE status = 'used'), 0)::bigint AS settled,
       count(*) FILTER (WHERE status = 'reserved' AND ts > now() - make_interval(secs => $3::float8)) AS reservations
FROM mana_ai.token_usage
WHERE user_id = $1 AND agent_id = $2 AND ts > now() - interval '24 hours'
  AND (status = 'used' OR (status = 'reserved' AND ts > now() - make_interval(secs => $3::float8)));

-- name: reserve_tokens
-- Reserve $4 tokens for a run if the agent's 24 h use ($6, read under budget_lock) is below
-- its budget $5 (NULL: no budget). No row back: over budget.
INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, status, reserved_tokens)
SELECT $1, $2, $3, 'reserved', $4
WHERE $5::bigint IS NULL OR $6::bigint < $5::bigint
RETURNING id;

-- name: settle_tokens
-- The run's reported usage replaces its reservation.
UPDATE mana_ai.token_usage
SET status = 'used', reserved_tokens = 0, prompt_tokens = $2, completion_tokens = $3, iteration_id = $4, ts = now()
WHERE id = $1;

-- name: release_tokens
-- A failed call gives its reservation back.
UPDATE mana_ai.token_usage SET status = 'released', reserved_tokens = 0 WHERE id = $1 AND status = 'reserved';

-- name: prune_usage
-- Delete one batch of usage rows older than the retention.
DELETE FROM mana_ai.token_usage
WHERE id IN (SELECT id FROM mana_ai.token_usage WHERE ts < now() - make_interval(hours => $1::int) LIMIT $2);

-- name: agent_snapshot
-- One agent's snapshot, tombstones included (inspection).
SELECT record, tombstone FROM mana_ai.agent_snapshots WHERE user_id = $1 AND agent_id = $2;

-- name: dead_slots_of_agent
-- The agent's dead due slots, newest first (inspection).
SELECT r.mission_id, r.due_slot, r.attempts, r.last_error, r.finished_at
FROM mana_ai.mission_runs r
JOIN mana_ai.mission_snapshots s ON s.user_id = r.user_id AND s.mission_id = r.mission_id
WHERE r.user_id = $1 AND r.status = 'dead' AND s.record->>'agentId' = $2
ORDER BY r.finished_at DESC NULLS LAST
LIMIT 50;

-- name: missions_of_user
-- A user's mission snapshots with the ledger row of each one's current due slot (inspection).
SELECT s.mission_id, s.record, s.tombstone, s.last_applied_at,
       r.due_slot, r.status, r.attempts, r.next_attempt_at, r.lease_owner, r.lease_expires_at,
       r.last_error, r.iteration_id, now() AS db_now
FROM mana_ai.mission_snapshots s
LEFT JOIN mana_ai.mission_runs r
  ON r.user_id = s.user_id AND r.mission_id = s.mission_id AND r.due_slot = s.record->>'nextRunAt'
WHERE s.user_id = $1
ORDER BY s.mission_id;

-- name: ledger_gauges
-- Run-ledger gauges: slots running, backing off, dead and not discarded (index ranges; planned
-- rows not read).
SELECT (SELECT count(*) FROM mana_ai.mission_runs WHERE status = 'running') AS running,
       (SELECT count(*) FROM mana_ai.mission_runs WHERE status = 'retry' AND next_attempt_at > now())
         AS backing_off,
       (SELECT count(*) FROM mana_ai.mission_runs WHERE status = 'dead' AND discarded_at IS NULL) AS dead;

-- name: next_wake
-- When something becomes due next: the earliest future nextRunAt instant of an active mission
-- (after $1, the app clock), and the earliest retry or lease expiry in the run ledger (the
-- database's now() for those).
SELECT
  (SELECT min(next_run_at) FROM mana_ai.mission_snapshots
   WHERE record->>'state' = 'active' AND NOT tombstone AND next_run_at IS NOT NULL
     AND next_run_at > $1::timestamptz AND (record->>'deletedAt') IS NULL) AS next_run_at,
  (SELECT min(next_attempt_at) FROM mana_ai.mission_runs
   WHERE status = 'retry' AND next_attempt_at > now()) AS next_retry_at,
  (SELECT min(lease_expires_at) FROM mana_ai.mission_runs
   WHERE status = 'running' AND lease_expires_at > now()) AS next_lease_expiry,
  now() AS db_now;

-- name: insert_used_tokens
-- Usage of a run that held no reservation (no budget to check): recorded as used at once. Once
-- per iteration: a row for it already written (with its write-back) is kept as it is.
INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, iteration_id, status, prompt_tokens, completion_tokens)
VALUES ($1, $2, $3, $4, 'used', $5, $6)
ON CONFLICT (user_id, iteration_id) WHERE iteration_id IS NOT NULL DO NOTHING;

-- name: hold_claim_as_user
-- Fencing and withUser in one round trip: lock this run's ledger row only while this claim
-- still holds the lease, and set the RLS user for the rest of the transaction.
SELECT set_config('app.current_user_id', $5, true)
FROM mana_ai.mission_runs
WHERE user_id = $1 AND mission_id = $2 AND due_slot = $3 AND lease_token = $4 AND status = 'running'
FOR UPDATE;

-- name: replay_records
-- The full history of the given records of one user (inside withUser), in fold order.
SELECT c.app_id, c.table_name, c.record_id, c.op, c.data, c.__stamps__ AS field_timestamps, c.created_at
FROM public.sync_changes c
JOIN unnest($2::text[], $3::text[], $4::text[]) AS k(app_id, table_name, record_id)
  ON c.app_id = k.app_id AND c.table_name = k.table_name AND c.record_id = k.record_id
WHERE c.user_id = $1
ORDER BY c.created_at, c.id;

-- name: insert_decrypt_audit
-- Decrypt-audit rows of one mission run (inside withUser: the table's RLS policy checks user_id).
INSERT INTO mana_ai.decrypt_audit (user_id, mission_id, iteration_id, table_name, record_id, status, reason)
SELECT $1, $2, $3, x.table_name, x.record_id, x.status, x.reason
FROM unnest($4::text[], $5::text[], $6::text[], $7::text[]) AS x(table_name, record_id, status, reason);

-- name: set_user
-- withUser: the RLS user for the rest of the transaction.
SELECT set_config('app.current_user_id', $1, true);

-- name: audit_rows_all
-- A user's decrypt-audit rows, newest first (inside withUser). `id` breaks ties
-- between rows of one transaction (same ts), so pages are stable.
SELECT id, mission_id, iteration_id, table_name, record_id, status, reason, ts
FROM mana_ai.decrypt_audit
WHERE user_id = $1
ORDER BY ts DESC, id DESC
LIMIT $2;

-- name: audit_rows_for_mission
-- A user's decrypt-audit rows of one mission, newest first (inside withUser).
SELECT id, mission_id, iteration_id, table_name, record_id, status, reason, ts
FROM mana_ai.decrypt_audit
WHERE user_id = $1 AND mission_id = $2
ORDER BY ts DESC, id DESC
LIMIT $3;

-- name: write_backs
-- The write-back fast path for a batch of items (migrations 0008, 0010): one round trip in all;
-- $2 the row variant of the sync_changes generation (SyncSchema.write_variant).
SELECT item_no, verdict, iteration_count, cursor_at, error_code FROM mana_ai.write_backs($1::jsonb, $2::text);

-- name: console_agents
-- Every agent snapshot, tombstones included, in key order, at most $1 (the console's overview).
SELECT user_id, agent_id, record, tombstone FROM mana_ai.agent_snapshots
ORDER BY user_id, agent_id
LIMIT $1;

-- name: console_usage_24h
-- The rolling 24 h use of the given agents, as usage_24h counts it (used plus live reservations
-- younger than $3 seconds), one row per agent that has any.
SELECT u.user_id, u.agent_id,
       COALESCE(sum(CASE WHEN u.status = 'reserved' THEN u.reserved_tokens
                         ELSE u.prompt_tokens + u.completion_tokens END), 0)::bigint AS used
FROM unnest($1::text[], $2::text[]) AS k(user_id, agent_id)
JOIN mana_ai.token_usage u ON u.user_id = k.user_id AND u.agent_id = k.agent_id
WHERE u.ts > now() - interval '24 hours'
  AND (u.status = 'used' OR (u.status = 'reserved' AND u.ts > now() - make_interval(secs => $3::float8)))
GROUP BY u.user_id, u.agent_id;

-- name: console_ledger_counts
-- Ledger slots per state (index ranges only): running, backing off, retry due now, dead (open
-- and discarded), planned in the last 24 h.
SELECT (SELECT count(*) FROM mana_ai.mission_runs WHERE status = 'running') AS running,
       (SELECT count(*) FROM mana_ai.mission_runs WHERE status = 'retry' AND next_attempt_at > now())
         AS backing_off,
       (SELECT count(*) FROM mana_ai.mission_runs WHERE status = 'retry' AND next_attempt_at <= now())
         AS retry_due,
       (SELECT count(*) FROM mana_ai.mission_runs WHERE status = 'dead' AND discarded_at IS NULL) AS dead,
       (SELECT count(*) FROM mana_ai.mission_runs WHERE status = 'dead' AND discarded_at IS NOT NULL)
         AS discarded,
       (SELECT count(*) FROM mana_ai.mission_runs
        WHERE status = 'planned' AND finished_at > now() - interval '24 hours') AS planned_24h;

-- name: console_planned_per_minute
-- Slots planned per minute over the last $1 minutes, by whole minutes ago (0: the last minute,
-- on the database's clock); minutes without any are absent.
SELECT floor(extract(epoch FROM now() - finished_at) / 60)::int AS minutes_ago, count(*) AS planned
FROM mana_ai.mission_runs
WHERE status = 'planned' AND finished_at > now() - make_interval(mins => $1::int)
GROUP BY 1;

-- name: console_dead_slots
-- Dead slots not discarded, newest first, at most $1, with the mission's title, agent and whether
-- the slot is still the mission's due slot (only then can a retry make it due again).
SELECT r.user_id, r.mission_id, r.due_slot, r.attempts, r.last_error, r.finished_at,
       s.record->>'title' AS title, s.record->>'agentId' AS agent_id, a.record->>'name' AS agent_name,
       COALESCE(s.record->>'nextRunAt' = r.due_slot AND NOT s.tombstone, false) AS current,
       count(*) OVER () AS total
FROM mana_ai.mission_runs r
LEFT JOIN mana_ai.mission_snapshots s ON s.user_id = r.user_id AND s.mission_id = r.mission_id
LEFT JOIN mana_ai.agent_snapshots a ON a.user_id = r.user_id AND a.agent_id = s.record->>'agentId'
WHERE r.status = 'dead' AND r.discarded_at IS NULL
ORDER BY r.finished_at DESC NULLS LAST, r.user_id, r.mission_id, r.due_slot
LIMIT $1;

-- name: console_find_dead_slot
-- The mission's dead slot to act on when none is named: the one at its current nextRunAt, else
-- the newest one not discarded.
SELECT r.due_slot
FROM mana_ai.mission_runs r
LEFT JOIN mana_ai.mission_snapshots s ON s.user_id = r.user_id AND s.mission_id = r.mission_id
WHERE r.user_id = $1 AND r.mission_id = $2 AND r.status = 'dead'
  AND (r.discarded_at IS NULL OR r.due_slot = s.record->>'nextRunAt')
ORDER BY (r.due_slot = s.record->>'nextRunAt') IS TRUE DESC, r.finished_at DESC NULLS LAST
LIMIT 1;

-- name: console_retry_slot
-- Give a dead slot another chance (docs/operations.md, "The run ledger"): retry now with its
-- attempts reset, and reopen it on the snapshot. Only a slot that is still the mission's due slot:
-- the due query never looks at another one. Its error history is kept.
WITH run AS (
  UPDATE mana_ai.mission_runs r
  SET status = 'retry', attempts = 0, next_attempt_at = now(), finished_at = NULL, discarded_at = NULL,
      updated_at = now()
  FROM mana_ai.mission_snapshots s
  WHERE r.user_id = $1 AND r.mission_id = $2 AND r.due_slot = $3 AND r.status = 'dead'
    AND s.user_id = r.user_id AND s.mission_id = r.mission_id AND s.record->>'nextRunAt' = r.due_slot
    AND NOT s.tombstone
  RETURNING r.due_slot
), reopened AS (
  UPDATE mana_ai.mission_snapshots s SET settled_slot = NULL
  FROM run WHERE s.user_id = $1 AND s.mission_id = $2 AND s.settled_slot = run.due_slot
)
SELECT due_slot FROM run;

-- name: console_discard_slot
-- Take a dead slot off the console's list; it stays dead.
UPDATE mana_ai.mission_runs SET discarded_at = now(), updated_at = now()
WHERE user_id = $1 AND mission_id = $2 AND due_slot = $3 AND status = 'dead' AND discarded_at IS NULL
RETURNING discarded_at;

-- name: console_slot_state
-- Why a retry or discard changed nothing: the slot's status, whether it was discarded, and the
-- mission's current due slot (no row: no such slot).
SELECT r.status, r.discarded_at IS NOT NULL AS discarded, s.record->>'nextRunAt' AS next_run_at,
       COALESCE(s.tombstone, true) AS gone
FROM mana_ai.mission_runs r
LEFT JOIN mana_ai.mission_snapshots s ON s.user_id = r.user_id AND s.mission_id = r.mission_id
WHERE r.user_id = $1 AND r.mission_id = $2 AND r.due_slot = $3;

-- name: park_claim
-- Give a claim back without it counting as an attempt, due again only after $6 seconds (a
-- mission parked while its deep-research job runs: polled again then, not on every cycle).
UPDATE mana_ai.mission_runs
SET status = 'retry', attempts = GREATEST(attempts - 1, 0),
    next_attempt_at = now() + make_interval(secs => $6::float8),
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, outcome = $5, updated_at = now()
WHERE user_id = $1 AND mission_id = $2 AND due_slot = $3 AND lease_token = $4 AND status = 'running';

-- name: research_job
-- A mission's deep-research job, with its age by the database clock (the same for every instance).
SELECT task_id, provider_id, status, due_slot, pending_skips, answer_markdown,
       extract(epoch FROM now() - submitted_at)::float8 AS age_s
FROM mana_ai.mission_research_jobs WHERE user_id = $1 AND mission_id = $2;

-- name: insert_research_job
-- A job just submitted for slot $5 (the mission is parked once: pending_skips starts at 1); it
-- replaces whatever the mission had before, as the TypeScript service's upsert does.
INSERT INTO mana_ai.mission_research_jobs (user_id, mission_id, task_id, provider_id, due_slot, pending_skips)
VALUES ($1, $2, $3, $4, $5, 1)
ON CONFLICT (user_id, mission_id) DO UPDATE SET
  task_id = EXCLUDED.task_id, provider_id = EXCLUDED.provider_id, submitted_at = now(),
  last_polled_at = NULL, status = 'pending', due_slot = EXCLUDED.due_slot, pending_skips = 1,
  last_error = NULL, answer_markdown = NULL, settled_at = NULL;

-- name: touch_research_job
-- The job is still pending (or could not be polled: $4 says why): one more parked cycle.
UPDATE mana_ai.mission_research_jobs
SET last_polled_at = now(), pending_skips = pending_skips + 1, last_error = $4
WHERE user_id = $1 AND mission_id = $2 AND task_id = $3 AND status = 'pending';

-- name: settle_research_job
-- The job ended ($4: 'completed' with its rendered answer $6, or 'failed' with the reason $7),
-- for slot $5: a retry of that slot reuses it instead of submitting again.
UPDATE mana_ai.mission_research_jobs
SET status = $4, due_slot = $5, answer_markdown = $6, last_error = $7, last_polled_at = now(), settled_at = now()
WHERE user_id = $1 AND mission_id = $2 AND task_id = $3;

-- name: delete_research_job
-- Forget one job (settled for another slot, or no longer wanted).
DELETE FROM mana_ai.mission_research_jobs WHERE user_id = $1 AND mission_id = $2 AND task_id = $3;

-- name: forget_settled_research
-- The slot was planned: its settled job has served (a pending job of the mission stays).
DELETE FROM mana_ai.mission_research_jobs
WHERE user_id = $1 AND mission_id = $2 AND due_slot = $3 AND status <> 'pending';

-- name: prune_research_jobs
-- Rows nobody came back for (the mission was deleted, or never due again): settled or
-- submitted more than $1 seconds ago.
DELETE FROM mana_ai.mission_research_jobs
WHERE COALESCE(settled_at, submitted_at) < now() - make_interval(secs => $1::float8);

-- name: research_jobs_of_user
-- A user's deep-research jobs (inspection: state and timing, never the answer).
SELECT mission_id, task_id, provider_id, status, due_slot, pending_skips, last_error,
       submitted_at, last_polled_at, settled_at, extract(epoch FROM now() - submitted_at)::float8 AS age_s
FROM mana_ai.mission_research_jobs WHERE user_id = $1;

-- name: release_claims
-- release_claim for several claims at once (a cycle that failed after claiming hands back what
-- it did not deliver). Rows are locked in primary-key order, as every statement locking several
-- mission_runs rows does, so that two such statements never deadlock.
WITH mine AS MATERIALIZED (
  SELECT r.user_id, r.mission_id, r.due_slot
  FROM mana_ai.mission_runs r
  JOIN unnest($1::text[], $2::text[], $3::text[], $4::uuid[]) AS x(user_id, mission_id, due_slot, lease_token)
    ON r.user_id = x.user_id AND r.mission_id = x.mission_id AND r.due_slot = x.due_slot
   AND r.lease_token = x.lease_token
  WHERE r.status = 'running'
  ORDER BY r.user_id COLLATE "C", r.mission_id COLLATE "C", r.due_slot COLLATE "C"
  FOR UPDATE OF r
)
UPDATE mana_ai.mission_runs r
SET status = 'retry', attempts = GREATEST(r.attempts - 1, 0), next_attempt_at = now(),
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, outcome = $5, updated_at = now()
FROM mine
WHERE r.user_id = mine.user_id AND r.mission_id = mine.mission_id AND r.due_slot = mine.due_slot
RETURNING r.mission_id;
-- name: prune_timeouts
-- Bounds of one retention batch (store/retention.py), for the rest of its transaction: the
-- statement's run time ($1) and any wait for a table lock ($2), e.g. behind a migration.
SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $2, true);

-- name: prune_mission_runs
-- One batch (at most $3) of settled run-ledger rows past their retention: planned, or dead and
-- discarded, more than $1 days ago; dead and never discarded more than $2 days ago (NULL days:
-- kept forever). Never a mission's current slot (its nextRunAt or its settled slot): that row
-- is what stops the slot being planned twice. Rows another session holds are skipped (SKIP
-- LOCKED never waits, so the prune takes no part in lock-order cycles).
DELETE FROM mana_ai.mission_runs
WHERE ctid = ANY (ARRAY(
  SELECT r.ctid FROM mana_ai.mission_runs r
  WHERE ((r.status = 'planned' AND r.finished_at < now() - make_interval(days => $1::int))
         OR (r.status = 'dead' AND r.discarded_at < now() - make_interval(days => $1::int))
         OR (r.status = 'dead' AND r.discarded_at IS NULL
             AND COALESCE(r.finished_at, r.updated_at) < now() - make_interval(days => $2::int)))
    AND NOT EXISTS (
      SELECT 1 FROM mana_ai.mission_snapshots s
      WHERE s.user_id = r.user_id AND s.mission_id = r.mission_id
        AND (s.settled_slot = r.due_slot OR s.record->>'nextRunAt' = r.due_slot))
  LIMIT $3
  FOR UPDATE OF r SKIP LOCKED));

-- name: prune_decrypt_audit
-- One batch (at most $2) of decrypt-audit rows older than $1 days (idx_decrypt_audit_ts).
DELETE FROM mana_ai.decrypt_audit
WHERE ctid = ANY (ARRAY(
  SELECT ctid FROM mana_ai.decrypt_audit WHERE ts < now() - make_interval(days => $1::int)
  LIMIT $2
  FOR UPDATE SKIP LOCKED));

-- name: prune_rejected_rows
-- One batch (at most $2) of rejected-row records made more than $1 days ago
-- (idx_rejected_rows_rejected_at).
DELETE FROM mana_ai.rejected_rows
WHERE ctid = ANY (ARRAY(
  SELECT ctid FROM mana_ai.rejected_rows WHERE rejected_at < now() - make_interval(days => $1::int)
  LIMIT $2
  FOR UPDATE SKIP LOCKED));

-- name: reserve_capped
-- Reserve $4 tokens when the rolling 24 h uses of the agent, the user and the deployment are
-- below their caps $5, $6, $7 (NULL: that cap does not apply and is not read), locks and all in
-- one round trip (migration 0017). One row: the three uses (0 where not read) and the
-- reservation's id (NULL: refused).
SELECT r_agent_used AS agent_used, r_user_used AS user_used, r_global_used AS global_used, r_id AS id
FROM mana_ai.reserve_capped_tokens($1, $2, $3, $4, $5, $6, $7, $8::float8);

-- name: caps_usage_24h
-- The rolling 24 h use of user $1 (when $2) and of the whole deployment (when $3), counted as
-- reserve_capped counts it (used plus reservations younger than $4 seconds); NULL: not read.
WITH window_use AS NOT MATERIALIZED (
  SELECT user_id, CASE WHEN status = 'reserved' THEN reserved_tokens ELSE prompt_tokens + completion_tokens END AS tokens
  FROM mana_ai.token_usage
  WHERE ts > now() - interval '24 hours'
    AND (status = 'used' OR (status = 'reserved' AND ts > now() - make_interval(secs => $4::float8)))
)
SELECT CASE WHEN $2::bool THEN (SELECT COALESCE(sum(tokens), 0) FROM window_use WHERE user_id = $1) END::bigint AS user_used,
       CASE WHEN $3::bool THEN (SELECT COALESCE(sum(tokens), 0) FROM window_use) END::bigint AS global_used;

-- name: console_spend_24h
-- The rolling 24 h use per user and agent (used plus reservations younger than $2 seconds) of
-- the $1 users who used most, most first, with the deployment's total beside every row.
WITH per_agent AS (
  SELECT user_id, agent_id,
         sum(CASE WHEN status = 'reserved' THEN reserved_tokens ELSE prompt_tokens + completion_tokens END)::bigint AS used
  FROM mana_ai.token_usage
  WHERE ts > now() - interval '24 hours'
    AND (status = 'used' OR (status = 'reserved' AND ts > now() - make_interval(secs => $2::float8)))
  GROUP BY user_id, agent_id
), per_user AS (
  SELECT user_id, sum(used)::bigint AS user_used FROM per_agent GROUP BY user_id ORDER BY user_used DESC, user_id LIMIT $1
)
SELECT a.user_id, a.agent_id, a.used, u.user_used, (SELECT COALESCE(sum(used), 0) FROM per_agent)::bigint AS total
FROM per_agent a JOIN per_user u USING (user_id)
ORDER BY u.user_used DESC, a.user_id, a.used DESC, a.agent_id;

-- name: dead_slots_page_all
-- Dead slots not discarded, everyone's, in byte-wise key order after the key ($1, $2, $3), at
-- most $4 (GET /internal/dead-slots; idx_mission_runs_dead_open, migration 0018). The start key
-- is ('', '', ''): no slot has an empty due slot (a nextRunAt that names no instant is never due).
SELECT r.user_id, r.mission_id, r.due_slot, r.attempts, r.outcome, r.last_error, r.finished_at,
       s.record->>'agentId' AS agent_id,
       COALESCE(s.record->>'nextRunAt' = r.due_slot AND NOT s.tombstone, false) AS current
FROM mana_ai.mission_runs r
LEFT JOIN mana_ai.mission_snapshots s ON s.user_id = r.user_id AND s.mission_id = r.mission_id
WHERE r.status = 'dead' AND r.discarded_at IS NULL
  AND (r.user_id COLLATE "C", r.mission_id COLLATE "C", r.due_slot COLLATE "C") > ($1, $2, $3)
ORDER BY r.user_id COLLATE "C", r.mission_id COLLATE "C", r.due_slot COLLATE "C"
LIMIT $4;

-- name: dead_slots_page_of_user
-- dead_slots_page_all for user $1 only, and of agent $2 when it is not NULL (the mission
-- snapshot's agentId); the key ($3, $4, $5), at most $6.
SELECT r.user_id, r.mission_id, r.due_slot, r.attempts, r.outcome, r.last_error, r.finished_at,
       s.record->>'agentId' AS agent_id,
       COALESCE(s.record->>'nextRunAt' = r.due_slot AND NOT s.tombstone, false) AS current
FROM mana_ai.mission_runs r
LEFT JOIN mana_ai.mission_snapshots s ON s.user_id = r.user_id AND s.mission_id = r.mission_id
WHERE r.status = 'dead' AND r.discarded_at IS NULL AND r.user_id = $1
  AND ($2::text IS NULL OR s.record->>'agentId' = $2)
  AND (r.user_id COLLATE "C", r.mission_id COLLATE "C", r.due_slot COLLATE "C") > ($3, $4, $5)
ORDER BY r.user_id COLLATE "C", r.mission_id COLLATE "C", r.due_slot COLLATE "C"
LIMIT $6;

-- name: dead_slots_count
-- How many dead slots not discarded there are: everyone's ($1 NULL), user $1's, or of agent $2
-- of user $1 (the console's confirmation step).
SELECT count(*) AS total
FROM mana_ai.mission_runs r
LEFT JOIN mana_ai.mission_snapshots s ON s.user_id = r.user_id AND s.mission_id = r.mission_id
WHERE r.status = 'dead' AND r.discarded_at IS NULL
  AND ($1::text IS NULL OR r.user_id = $1)
  AND ($2::text IS NULL OR s.record->>'agentId' = $2);

-- name: dead_slots_per_user
-- Dead slots not discarded per user and agent (the console's bulk actions), the users with the
-- most first, at most $1 rows.
SELECT r.user_id, s.record->>'agentId' AS agent_id, count(*) AS slots
FROM mana_ai.mission_runs r
LEFT JOIN mana_ai.mission_snapshots s ON s.user_id = r.user_id AND s.mission_id = r.mission_id
WHERE r.status = 'dead' AND r.discarded_at IS NULL
GROUP BY 1, 2
ORDER BY sum(count(*)) OVER (PARTITION BY r.user_id) DESC, r.user_id, slots DESC, agent_id NULLS LAST
LIMIT $1;

-- name: retry_dead_slots_all
-- Bulk retry, one batch: the next at most $4 dead slots not discarded, everyone's, after the key
-- ($1, $2, $3), locked in byte-wise key order (the one lock order, see claim_runs); each one that
-- is still its mission's due slot is retried as console_retry_slot does (attempts 0, due now,
-- reopened on the snapshot); the others stay dead (superseded). Returns how many were taken and
-- retried, and the last key taken (the next batch starts after it).
WITH batch AS MATERIALIZED (
  SELECT r.user_id, r.mission_id, r.due_slot
  FROM mana_ai.mission_runs r
  WHERE r.status = 'dead' AND r.discarded_at IS NULL
    AND (r.user_id COLLATE "C", r.mission_id COLLATE "C", r.due_slot COLLATE "C") > ($1, $2, $3)
  ORDER BY r.user_id COLLATE "C", r.mission_id COLLATE "C", r.due_slot COLLATE "C"
  LIMIT $4
  FOR UPDATE OF r
), run AS (
  UPDATE mana_ai.mission_runs r
  SET status = 'retry', attempts = 0, next_attempt_at = now(), finished_at = NULL, discarded_at = NULL,
      updated_at = now()
  FROM batch, mana_ai.mission_snapshots s
  WHERE r.user_id = batch.user_id AND r.mission_id = batch.mission_id AND r.due_slot = batch.due_slot
    AND s.user_id = r.user_id AND s.mission_id = r.mission_id AND s.record->>'nextRunAt' = r.due_slot
    AND NOT s.tombstone
  RETURNING r.user_id, r.mission_id, r.due_slot
), reopened AS (
  UPDATE mana_ai.mission_snapshots s SET settled_slot = NULL
  FROM run WHERE s.user_id = run.user_id AND s.mission_id = run.mission_id AND s.settled_slot = run.due_slot
)
SELECT (SELECT count(*) FROM batch) AS taken, (SELECT count(*) FROM run) AS changed,
       last.user_id, last.mission_id, last.due_slot
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
  SELECT user_id, mission_id, due_slot FROM batch
  ORDER BY user_id COLLATE "C" DESC, mission_id COLLATE "C" DESC, due_slot COLLATE "C" DESC LIMIT 1
) AS last ON true;

-- name: retry_dead_slots_of_user
-- retry_dead_slots_all for user $1 only, and of agent $2 when it is not NULL; the key ($3, $4,
-- $5), at most $6.
WITH batch AS MATERIALIZED (
  SELECT r.user_id, r.mission_id, r.due_slot
  FROM mana_ai.mission_runs r
  LEFT JOIN mana_ai.mission_snapshots s ON s.user_id = r.user_id AND s.mission_id = r.mission_id
  WHERE r.status = 'dead' AND r.discarded_at IS NULL AND r.user_id = $1
    AND ($2::text IS NULL OR s.record->>'agentId' = $2)
    AND (r.user_id COLLATE "C", r.mission_id COLLATE "C", r.due_slot COLLATE "C") > ($3, $4, $5)
  ORDER BY r.user_id COLLATE "C", r.mission_id COLLATE "C", r.due_slot COLLATE "C"
  LIMIT $6
  FOR UPDATE OF r
), run AS (
  UPDATE mana_ai.mission_runs r
  SET status = 'retry', attempts = 0, next_attempt_at = now(), finished_at = NULL, discarded_at = NULL,
      updated_at = now()
  FROM batch, mana_ai.mission_snapshots s
  WHERE r.user_id = batch.user_id AND r.mission_id = batch.mission_id AND r.due_slot = batch.due_slot
    AND s.user_id = r.user_id AND s.mission_id = r.mission_id AND s.record->>'nextRunAt' = r.due_slot
    AND NOT s.tombstone
  RETURNING r.user_id, r.mission_id, r.due_slot
), reopened AS (
  UPDATE mana_ai.mission_snapshots s SET settled_slot = NULL
  FROM run WHERE s.user_id = run.user_id AND s.mission_id = run.mission_id AND s.settled_slot = run.due_slot
)
SELECT (SELECT count(*) FROM batch) AS taken, (SELECT count(*) FROM run) AS changed,
       last.user_id, last.mission_id, last.due_slot
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
  SELECT user_id, mission_id, due_slot FROM batch
  ORDER BY user_id COLLATE "C" DESC, mission_id COLLATE "C" DESC, due_slot COLLATE "C" DESC LIMIT 1
) AS last ON true;

-- name: discard_dead_slots_all
-- Bulk discard, one batch: the next at most $4 dead slots not discarded, everyone's, after the
-- key ($1, $2, $3), locked in byte-wise key order, are discarded as console_discard_slot does
-- (they stay dead). Returns how many were taken and discarded, and the last key taken.
WITH batch AS MATERIALIZED (
  SELECT r.user_id, r.mission_id, r.due_slot
  FROM mana_ai.mission_runs r
  WHERE r.status = 'dead' AND r.discarded_at IS NULL
    AND (r.user_id COLLATE "C", r.mission_id COLLATE "C", r.due_slot COLLATE "C") > ($1, $2, $3)
  ORDER BY r.user_id COLLATE "C", r.mission_id COLLATE "C", r.due_slot COLLATE "C"
  LIMIT $4
  FOR UPDATE OF r
), run AS (
  UPDATE mana_ai.mission_runs r SET discarded_at = now(), updated_at = now()
  FROM batch
  WHERE r.user_id = batch.user_id AND r.mission_id = batch.mission_id AND r.due_slot = batch.due_slot
  RETURNING r.user_id
)
SELECT (SELECT count(*) FROM batch) AS taken, (SELECT count(*) FROM run) AS changed,
       last.user_id, last.mission_id, last.due_slot
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
  SELECT user_id, mission_id, due_slot FROM batch
  ORDER BY user_id COLLATE "C" DESC, mission_id COLLATE "C" DESC, due_slot COLLATE "C" DESC LIMIT 1
) AS last ON true;

-- name: discard_dead_slots_of_user
-- discard_dead_slots_all for user $1 only, and of agent $2 when it is not NULL; the key ($3, $4,
-- $5), at most $6.
WITH batch AS MATERIALIZED (
  SELECT r.user_id, r.mission_id, r.due_slot
  FROM mana_ai.mission_runs r
  LEFT JOIN mana_ai.mission_snapshots s ON s.user_id = r.user_id AND s.mission_id = r.mission_id
  WHERE r.status = 'dead' AND r.discarded_at IS NULL AND r.user_id = $1
    AND ($2::text IS NULL OR s.record->>'agentId' = $2)
    AND (r.user_id COLLATE "C", r.mission_id COLLATE "C", r.due_slot COLLATE "C") > ($3, $4, $5)
  ORDER BY r.user_id COLLATE "C", r.mission_id COLLATE "C", r.due_slot COLLATE "C"
  LIMIT $6
  FOR UPDATE OF r
), run AS (
  UPDATE mana_ai.mission_runs r SET discarded_at = now(), updated_at = now()
  FROM batch
  WHERE r.user_id = batch.user_id AND r.mission_id = batch.mission_id AND r.due_slot = batch.due_slot
  RETURNING r.user_id
)
SELECT (SELECT count(*) FROM batch) AS taken, (SELECT count(*) FROM run) AS changed,
       last.user_id, last.mission_id, last.due_slot
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
  SELECT user_id, mission_id, due_slot FROM batch
  ORDER BY user_id COLLATE "C" DESC, mission_id COLLATE "C" DESC, due_slot COLLATE "C" DESC LIMIT 1
) AS last ON true;

-- name: bulk_timeouts
-- Bounds of one bulk retry/discard batch (store/dead_slots.py), for the rest of its transaction:
-- the statement's run time ($1) and any wait for a row or table lock ($2).
SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $2, true);

-- name: insert_example_mission
-- One mission as a user's device writes it to sync_changes (`mana-ai seed-example`): record id,
-- user, the mission record, the user's actor stamp.
INSERT INTO public.sync_changes (app_id, table_name, record_id, user_id, op, data, client_id, actor)
VALUES ('ai', 'aiMissions', $1, $2, 'insert', $3, 'mana-ai-example', $4);
