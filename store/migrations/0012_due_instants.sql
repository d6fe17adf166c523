-- A mission's nextRunAt is compared as an instant, never as text. The text stays the due slot's
-- key (the run ledger and settled_slot name the slot exactly as the device wrote it); the instant
-- it names is kept beside it in `next_run_at`, computed by the database from `record` on every
-- write, whoever writes it, and backfilled for existing rows by ADD COLUMN (a table rewrite).
--
-- mana_ai.instant_of reads the ISO-8601 forms a device writes:
--   YYYY-MM-DD, then T (or t, or a space), then HH:MM with optional :SS and an optional fraction
--   (. or ,; digits past microseconds are dropped), then an optional offset: Z (or z), ±HH:MM,
--   ±HHMM or ±HH. Without an offset the time is UTC.
-- Anything else (another format, a date that does not exist, hour 24, a leap second, an instant
-- outside the years 1-9999 UTC, a value that is not a JSON string) reads as NULL: such a mission is never due. The function never raises,
-- so no value can fail the write of a batch of snapshots. It is IMMUTABLE in fact: every value is
-- built in UTC, so neither TimeZone nor DateStyle changes a result. store/instants.py holds the
-- same grammar for the refresh's reports (tests check that both agree).
CREATE OR REPLACE FUNCTION mana_ai.instant_of(value jsonb) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  p text[];
  y int; mo int; d int; h int; mi int; sec int; oh int; om int; r timestamptz;
BEGIN
  IF jsonb_typeof(value) <> 'string' THEN
    RETURN NULL;
  END IF;
  p := regexp_match(value #>> '{}',
    '^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]{1,6})[0-9]*)?)?(?:([Zz])|([+-])([0-9]{2})(?::?([0-9]{2}))?)?$');
  IF p IS NULL THEN
    RETURN NULL;
  END IF;
  y := p[1]::int; mo := p[2]::int; d := p[3]::int; h := p[4]::int; mi := p[5]::int;
  sec := COALESCE(p[6]::int, 0); oh := COALESCE(p[10]::int, 0); om := COALESCE(p[11]::int, 0);
  IF y < 1 OR mo < 1 OR mo > 12 OR d < 1 OR h > 23 OR mi > 59 OR sec > 59 OR oh > 23 OR om > 59
     OR d > extract(day FROM make_date(y, mo, 1) + interval '1 month' - interval '1 day') THEN
    RETURN NULL;
  END IF;
  r := make_timestamptz(y, mo, d, h, mi, sec + COALESCE(('0.' || p[7])::numeric, 0), 'UTC')
       - (CASE p[9] WHEN '-' THEN -1 ELSE 1 END) * make_interval(hours => oh, mins => om);
  -- an offset may carry a time of year 1 or 9999 past the years the grammar names
  IF r < make_timestamptz(1, 1, 1, 0, 0, 0, 'UTC') OR r >= make_timestamptz(10000, 1, 1, 0, 0, 0, 'UTC') THEN
    RETURN NULL;
  END IF;
  RETURN r;
END
$$;

ALTER TABLE mana_ai.mission_snapshots
  ADD COLUMN IF NOT EXISTS next_run_at timestamptz
  GENERATED ALWAYS AS (mana_ai.instant_of(record->'nextRunAt')) STORED;

-- The due query reads open slots in instant order; the next-wake query the earliest instant.
DROP INDEX IF EXISTS mana_ai.idx_mission_snapshots_open_slot;
CREATE INDEX IF NOT EXISTS idx_mission_snapshots_open_due
  ON mana_ai.mission_snapshots (next_run_at)
  WHERE record->>'state' = 'active' AND NOT tombstone AND next_run_at IS NOT NULL
    AND (record->>'nextRunAt') IS DISTINCT FROM settled_slot;
CREATE INDEX IF NOT EXISTS idx_mission_snapshots_next_run
  ON mana_ai.mission_snapshots (next_run_at)
  WHERE record->>'state' = 'active' AND NOT tombstone AND next_run_at IS NOT NULL;
