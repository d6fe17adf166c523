-- The NOTIFY half of the latency hint (store/listen.py): a trigger function that tells the
-- daemon which ai table changed. Only the function lives here; the trigger on
-- public.sync_changes (mana-sync's table) is optional and installed or dropped by
-- store.listen.set_notify_trigger, because our role may not own that table.
CREATE OR REPLACE FUNCTION mana_ai.notify_ai_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('mana_ai_changes', NEW.table_name);
  RETURN NULL;  -- AFTER ... FOR EACH ROW: the result is ignored
END;
$$;
