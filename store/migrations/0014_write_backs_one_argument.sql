-- The one-argument write-back of the release before migration 0010, back again (expand now,
-- contract one release later: docs/operations.md, "Migrations"). Migration 0010 dropped it
-- while replicas of that release, still running during a rolling deploy, call it as
-- `SELECT item_no, verdict, iteration_count, cursor_at, error_code FROM mana_ai.write_backs($1::jsonb)`;
-- each of their write-backs then failed.
--
-- It takes the same items and answers the same verdicts. It delegates to the two-argument
-- function (0010) with the generation of `public.sync_changes` read from the catalog at each
-- call, by the rule the daemon applies at start (store/sync_schema.py), so both releases write
-- the same row during the deploy:
--   field_timestamps, no origin -> 'v0.6': exactly the previous release's row;
--   field_timestamps and origin -> 'transitional': that row plus origin = 'agent' (the previous
--                                  release left origin NULL);
--   field_meta                  -> 'field-meta' ('field-meta-no-origin' without origin): the
--                                  row after mana-sync's overhaul (the previous release could
--                                  not write there at all: it named field_timestamps).
-- The release after the one that ships this migration may drop it again: by then no replica
-- calls it.

CREATE OR REPLACE FUNCTION mana_ai.write_backs(items jsonb)
RETURNS TABLE (item_no int, verdict text, iteration_count int, cursor_at timestamptz, error_code text)
LANGUAGE sql AS $$
  SELECT w.item_no, w.verdict, w.iteration_count, w.cursor_at, w.error_code
  FROM mana_ai.write_backs(items, (
    SELECT CASE
             WHEN bool_or(a.attname = 'field_meta') AND bool_or(a.attname = 'origin') THEN 'field-meta'
             WHEN bool_or(a.attname = 'field_meta') THEN 'field-meta-no-origin'
             WHEN bool_or(a.attname = 'origin') THEN 'transitional'
             ELSE 'v0.6'
           END
    FROM pg_attribute a
    WHERE a.attrelid = to_regclass('public.sync_changes') AND a.attnum > 0 AND NOT a.attisdropped)) w
$$;
