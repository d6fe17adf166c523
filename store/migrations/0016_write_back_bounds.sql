-- The write-back's fast path (0010) with two changes, same signature and result columns (a
-- release still running 0010's code keeps working against it):
--
-- * items are taken in the run ledger's key order (user_id, mission_id, due_slot), whatever
--   order they were sent in, byte-wise (COLLATE "C", as claim_runs and renew_leases): every
--   statement that locks `mission_runs` rows locks them in that order, so two of them never
--   wait for each other in a circle (a deadlock);
-- * an item that carries `max_row_bytes` is not written when the row it would write is larger,
--   measured as the refresh measures the rows it reads (`octet_length` of `data` and the stamps
--   as text): its verdict is 'too-large', with the row's bytes as text in `error_code` and
--   the iterations the row would have had in `iteration_count`. The daemon never writes a row
--   its own refresh would reject.

CREATE OR REPLACE FUNCTION mana_ai.write_backs(items jsonb, generation text)
RETURNS TABLE (item_no int, verdict text, iteration_count int, cursor_at timestamptz, error_code text)
LANGUAGE plpgsql AS $$
DECLARE
  item jsonb;
  snap record;
  existing jsonb;
  data jsonb;
  stamps jsonb;
  stamp text;
  row_bytes bigint;
  item_position bigint;
BEGIN
  FOR item, item_position IN
      SELECT e.value, e.ordinality FROM jsonb_array_elements(items) WITH ORDINALITY AS e
      ORDER BY e.value->>'user_id' COLLATE "C", e.value->>'mission_id' COLLATE "C",
               e.value->>'due_slot' COLLATE "C", e.ordinality LOOP
    item_no := item_position;
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
      -- the row of the table's generation (store/sync_schema.py); a statement naming a column
      -- the table lacks is never run, and PL/pgSQL resolves columns only when it runs one
      IF generation IN ('field-meta', 'field-meta-no-origin') THEN
        data := jsonb_build_object('iterations', existing || jsonb_build_array(item->'iteration'));
        stamps := jsonb_build_object('iterations', stamp);
      ELSE
        data := jsonb_build_object('iterations', existing || jsonb_build_array(item->'iteration'),
                                   'updatedAt', stamp);
        stamps := jsonb_build_object('iterations', stamp, 'updatedAt', stamp);
      END IF;
      IF item ? 'max_row_bytes' THEN
        row_bytes := octet_length(data::text) + octet_length(stamps::text);
        IF row_bytes > (item->>'max_row_bytes')::bigint THEN
          verdict := 'too-large';
          iteration_count := jsonb_array_length(data->'iterations');
          error_code := row_bytes::text;
          RETURN NEXT;
          CONTINUE;
        END IF;
      END IF;
      IF generation = 'field-meta' THEN
        INSERT INTO public.sync_changes
          (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, schema_version, actor, origin)
        VALUES ('ai', 'aiMissions', item->>'mission_id', item->>'user_id', 'update', data, stamps,
                'mana-ai-runner', 1, item->'actor', 'agent');
      ELSIF generation = 'field-meta-no-origin' THEN
        INSERT INTO public.sync_changes
          (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, schema_version, actor)
        VALUES ('ai', 'aiMissions', item->>'mission_id', item->>'user_id', 'update', data, stamps,
                'mana-ai-runner', 1, item->'actor');
      ELSIF generation = 'transitional' THEN
        INSERT INTO public.sync_changes
          (app_id, table_name, record_id, user_id, op, data, field_timestamps, client_id, schema_version, actor,
           origin)
        VALUES ('ai', 'aiMissions', item->>'mission_id', item->>'user_id', 'update', data, stamps,
                'mana-ai-runner', 1, item->'actor', 'agent');
      ELSIF generation = 'v0.6' THEN
        INSERT INTO public.sync_changes
          (app_id, table_name, record_id, user_id, op, data, field_timestamps, client_id, schema_version, actor)
        VALUES ('ai', 'aiMissions', item->>'mission_id', item->>'user_id', 'update', data, stamps,
                'mana-ai-runner', 1, item->'actor');
      ELSE
        RAISE EXCEPTION 'unknown sync_changes generation %', generation USING ERRCODE = '22023';
      END IF;
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
