-- The write-back's fast path in one statement (one round trip for any number of missions):
-- for each item, the same steps as the careful path in store/writeback.py, in the same order:
-- withUser, fence on the claim's lease, read the snapshot, then INSERT the TypeScript service's row,
-- mark the slot planned, record the token usage.
--
-- Each item's verdict: 'stale' (newer sync_changes rows than the snapshot: the client folds them
-- and takes the careful path), 'missing' (no snapshot), 'lease-lost', 'gone' (tombstone),
-- 'written' with the iteration count and snapshot cursor, or 'failed' with the SQLSTATE.
-- Each item runs in its own subtransaction, so one failure never undoes another's write.

-- Planner provenance (docs/planner-tools.md): which planner produced a slot's plan
-- (MANA_AI_PLANNER: 'json' or 'tools') and in how many LLM rounds. Rows planned before this
-- migration keep NULL (they were all 'json', one round).
ALTER TABLE mana_ai.mission_runs
  ADD COLUMN IF NOT EXISTS planner_mode TEXT,
  ADD COLUMN IF NOT EXISTS planner_rounds INT;

CREATE OR REPLACE FUNCTION mana_ai.write_backs(items jsonb)
RETURNS TABLE (item_no int, verdict text, iteration_count int, cursor_at timestamptz, error_code text)
LANGUAGE plpgsql AS $$
DECLARE
  item jsonb;
  snap record;
  existing jsonb;
  data jsonb;
  stamp text;
BEGIN
  item_no := 0;
  FOR item IN SELECT value FROM jsonb_array_elements(items) LOOP
    item_no := item_no + 1;
    iteration_count := NULL;
    cursor_at := NULL;
    error_code := NULL;
    BEGIN
      PERFORM set_config('app.current_user_id', item->>'user_id', true);
      PERFORM 1 FROM mana_ai.mission_runs r
      WHERE r.user_id = item->>'user_id' AND r.mission_id = item->>'mission_id'
        AND r.due_slot = item->>'due_slot' AND r.lease_token = (item->>'token')::uuid AND r.status = 'running'
      FOR UPDATE;
      IF NOT FOUND THEN
        verdict := 'lease-lost';
        RETURN NEXT;
        CONTINUE;
      END IF;
      SELECT s.record, s.tombstone, s.last_applied_at INTO snap
      FROM mana_ai.mission_snapshots s
      WHERE s.user_id = item->>'user_id' AND s.mission_id = item->>'mission_id';
      IF NOT FOUND THEN
        verdict := 'missing';
      ELSIF EXISTS (
          SELECT 1 FROM public.sync_changes c
          WHERE c.user_id = item->>'user_id' AND c.app_id = 'ai' AND c.table_name = 'aiMissions'
            AND c.record_id = item->>'mission_id' AND c.created_at > snap.last_applied_at) THEN
        verdict := 'stale';
      ELSIF snap.tombstone THEN
        verdict := 'gone';
      ELSE
        verdict := 'written';
      END IF;
      IF verdict <> 'written' THEN
        RETURN NEXT;
        CONTINUE;
      END IF;
      existing := CASE WHEN jsonb_typeof(snap.record->'iterations') = 'array'
                       THEN snap.record->'iterations' ELSE '[]'::jsonb END;
      stamp := item->>'now_iso';
      data := jsonb_build_object('iterations', existing || jsonb_build_array(item->'iteration'),
                                 'updatedAt', stamp);
      INSERT INTO public.sync_changes
        (app_id, table_name, record_id, user_id, op, data, field_timestamps, client_id, schema_version, actor)
      VALUES ('ai', 'aiMissions', item->>'mission_id', item->>'user_id', 'update', data,
              jsonb_build_object('iterations', stamp, 'updatedAt', stamp), 'mana-ai-runner', 1, item->'actor');
      UPDATE mana_ai.mission_snapshots SET settled_slot = item->>'due_slot'
      WHERE user_id = item->>'user_id' AND mission_id = item->>'mission_id';
      UPDATE mana_ai.mission_runs
      SET status = 'planned', outcome = item->>'outcome', iteration_id = item->'iteration'->>'id',
          prompt_tokens = (item->>'prompt_tokens')::int, completion_tokens = (item->>'completion_tokens')::int,
          model = item->>'model', prompt_hash = item->>'prompt_hash', snapshot_cursor = snap.last_applied_at,
          planner_mode = COALESCE(item->>'planner_mode', 'json'),
          planner_rounds = COALESCE((item->>'planner_rounds')::int, 1),
          last_error = NULL, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
          finished_at = now(), updated_at = now()
      WHERE user_id = item->>'user_id' AND mission_id = item->>'mission_id' AND due_slot = item->>'due_slot';
      IF jsonb_typeof(item->'usage') = 'object' THEN
        IF jsonb_typeof(item->'usage'->'reservation_id') = 'number' THEN
          UPDATE mana_ai.token_usage
          SET status = 'used', reserved_tokens = 0, prompt_tokens = (item->'usage'->>'prompt_tokens')::int,
              completion_tokens = (item->'usage'->>'completion_tokens')::int,
              iteration_id = item->'usage'->>'iteration_id',
              ts = now()
          WHERE id = (item->'usage'->>'reservation_id')::bigint;
        ELSE
          INSERT INTO mana_ai.token_usage
            (user_id, agent_id, mission_id, iteration_id, status, prompt_tokens, completion_tokens)
          VALUES (item->>'user_id', item->'usage'->>'agent_id', item->>'mission_id',
                  item->'usage'->>'iteration_id', 'used', (item->'usage'->>'prompt_tokens')::int,
                  (item->'usage'->>'completion_tokens')::int);
        END IF;
      END IF;
      iteration_count := jsonb_array_length(data->'iterations');
      cursor_at := snap.last_applied_at;
      RETURN NEXT;
    EXCEPTION WHEN OTHERS THEN
      verdict := 'failed';
      error_code := SQLSTATE;
      RETURN NEXT;
    END;
  END LOOP;
END
$$;
