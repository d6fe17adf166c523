-- A mission's nextRunAt is compared as an instant, never as text. The text stays the due slot's
-- key (the run ledger and settled_slot name the slot exactly as the device wrote it); the instant
-- it names is kept beside it in `next_run_at`, computed by the database from `record` on every
-- write, whoever writes it, and backfilled for existing rows by ADD COLUMN (a table rewrite).
--
-- mana_ai.instant_of reads the ISO-8601 forms a device writes:
--   YYYY-MM-DD, then T (or t, or a space), then HH:MM with optional :SS and an optional fraction
--   (. or ,; digits past microseconds are dropped), then an optional offset: Z (or z), ±HH:MM,
--   ±HHMM or ±HH, at most ±15:59 (what Postgres holds). Without an offset the time is UTC.
-- Anything else (another format, a date that does not exist, hour 24, a leap second, an instant
-- outside the years 1-9999 UTC, a value that is not a JSON string) reads as NULL: such a mission
-- is never due. The function never raises, so no value can fail the write of a batch of
-- snapshots: every field is range-checked before the cast. It is IMMUTABLE in fact: the text cast
-- is in ISO order and always carries its offset (Z when it had none), so neither TimeZone nor
-- DateStyle changes a result. store/instants.py holds the same grammar for the refresh's reports
-- (tests check that both agree).
CREATE OR REPLACE FUNCTION mana_ai.instant_of(value jsonb) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  v text; rest text; k int; r timestamptz;
BEGIN
  IF jsonb_typeof(value) <> 'string' THEN
    RETURN NULL;
  END IF;
  v := value #>> '{}';
  -- the shape, with every field in its range (a match without captures: regexp_match is ~10x slower)
  IF v !~ '^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9]([.,][0-9]+)?)?([Zz]|[+-](0[0-9]|1[0-5])(:?[0-5][0-9])?)?$'
     OR left(v, 4) = '0000' THEN
    RETURN NULL;
  END IF;
  -- a day past the 28th must exist in its month (30 February does not)
  IF substr(v, 9, 2)::int > 28 AND substr(v, 9, 2)::int > extract(day FROM
       make_date(left(v, 4)::int, substr(v, 6, 2)::int, 1) + interval '1 month' - interval '1 day') THEN
    RETURN NULL;
  END IF;
  -- after YYYY-MM-DDTHH:MM: [:SS[.fraction]] then the offset, which starts at its sign or Z
  rest := substr(v, 17);
  k := least(nullif(strpos(rest, '+'), 0), nullif(strpos(rest, '-'), 0),
             nullif(strpos(rest, 'Z'), 0), nullif(strpos(rest, 'z'), 0));
  r := (left(v, 10) || 'T' || substr(v, 12, 5)
        || replace(left(CASE WHEN k IS NULL THEN rest ELSE left(rest, k - 1) END, 10), ',', '.')  -- µs: cut, not rounded
        || CASE WHEN k IS NULL THEN 'Z' ELSE upper(substr(rest, k)) END)::timestamptz;
  -- an offset may carry a time of year 1 or 9999 past the years the grammar names
  IF r < '0001-01-01T00:00:00Z'::timestamptz OR r >= '10000-01-01T00:00:00Z'::timestamptz THEN
    RETURN NULL;
  END IF;
  RETURN r;
END
$$;

ALTER TABLE mana_ai.mission_snapshots
  ADD COLUMN IF NOT EXISTS next_run_at timestamptz
  GENERATED ALWAYS AS (mana_ai.instant_of(record->'nextRunAt')) STORED;

-- The due query reads open slots in instant order; the next-wake query the earliest instant.
-- idx_mission_snapshots_open_slot (0006, the text order) stays: the previous release's due query
-- uses it during a rolling deploy. A later release may drop it (expand now, contract later).
CREATE INDEX IF NOT EXISTS idx_mission_snapshots_open_due
  ON mana_ai.mission_snapshots (next_run_at)
  WHERE record->>'state' = 'active' AND NOT tombstone AND next_run_at IS NOT NULL
    AND (record->>'nextRunAt') IS DISTINCT FROM settled_slot;
CREATE INDEX IF NOT EXISTS idx_mission_snapshots_next_run
  ON mana_ai.mission_snapshots (next_run_at)
  WHERE record->>'state' = 'active' AND NOT tombstone AND next_run_at IS NOT NULL;
