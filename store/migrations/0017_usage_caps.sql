-- Token caps above the agent (MANA_AI_USER_MAX_TOKENS_PER_DAY, MANA_AI_MAX_TOKENS_PER_DAY).
--
-- The per-user cap sums one user's rolling 24 h use across all of the user's agents on every
-- reservation: this index reads only that user's rows of the window. The deployment cap's sum
-- uses idx_token_usage_ts (0005). Building an index blocks writes to its table until it is
-- built; on a large token_usage, create it beforehand without blocking (the migration then
-- finds it):
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_token_usage_user_window ON mana_ai.token_usage (user_id, ts);
CREATE INDEX IF NOT EXISTS idx_token_usage_user_window ON mana_ai.token_usage (user_id, ts);

-- One reservation against the caps that apply, in one statement (one round trip): take the
-- advisory locks of the caps in one order (deployment, user, agent), then read the rolling 24 h
-- uses and insert the reservation when each is below its cap. Each statement of a VOLATILE
-- function under READ COMMITTED sees a fresh snapshot, so the sums, read after the locks, see
-- every reservation committed by a run that held them before. The locks end with the caller's
-- transaction (the implicit one of the statement). NULL caps do not apply: no lock, no sum (0).
-- Use counts used tokens plus reservations younger than p_stale_s seconds, as usage_24h does.
CREATE OR REPLACE FUNCTION mana_ai.reserve_capped_tokens(
  p_user text, p_agent text, p_mission text, p_estimate int, p_budget bigint, p_user_cap bigint,
  p_global_cap bigint, p_stale_s float8)
RETURNS TABLE (r_agent_used bigint, r_user_used bigint, r_global_used bigint, r_id bigint)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  IF p_global_cap IS NOT NULL THEN
    PERFORM pg_advisory_xact_lock(hashtext('mana_ai.global_budget'));
  END IF;
  IF p_user_cap IS NOT NULL THEN
    PERFORM pg_advisory_xact_lock(hashtext('mana_ai.user_budget/' || p_user));
  END IF;
  IF p_budget IS NOT NULL THEN
    PERFORM pg_advisory_xact_lock(hashtext('mana_ai.budget/' || p_user || '/' || p_agent));
  END IF;
  r_agent_used := 0; r_user_used := 0; r_global_used := 0; r_id := NULL;
  IF p_budget IS NOT NULL THEN
    SELECT COALESCE(sum(CASE WHEN u.status = 'reserved' THEN u.reserved_tokens
                             ELSE u.prompt_tokens + u.completion_tokens END), 0)
    INTO r_agent_used FROM mana_ai.token_usage u
    WHERE u.user_id = p_user AND u.agent_id = p_agent AND u.ts > now() - interval '24 hours'
      AND (u.status = 'used' OR (u.status = 'reserved' AND u.ts > now() - make_interval(secs => p_stale_s)));
  END IF;
  IF p_user_cap IS NOT NULL THEN
    SELECT COALESCE(sum(CASE WHEN u.status = 'reserved' THEN u.reserved_tokens
                             ELSE u.prompt_tokens + u.completion_tokens END), 0)
    INTO r_user_used FROM mana_ai.token_usage u
    WHERE u.user_id = p_user AND u.ts > now() - interval '24 hours'
      AND (u.status = 'used' OR (u.status = 'reserved' AND u.ts > now() - make_interval(secs => p_stale_s)));
  END IF;
  IF p_global_cap IS NOT NULL THEN
    SELECT COALESCE(sum(CASE WHEN u.status = 'reserved' THEN u.reserved_tokens
                             ELSE u.prompt_tokens + u.completion_tokens END), 0)
    INTO r_global_used FROM mana_ai.token_usage u
    WHERE u.ts > now() - interval '24 hours'
      AND (u.status = 'used' OR (u.status = 'reserved' AND u.ts > now() - make_interval(secs => p_stale_s)));
  END IF;
  IF (p_budget IS NULL OR r_agent_used < p_budget) AND (p_user_cap IS NULL OR r_user_used < p_user_cap)
     AND (p_global_cap IS NULL OR r_global_used < p_global_cap) THEN
    INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, status, reserved_tokens)
    VALUES (p_user, p_agent, p_mission, 'reserved', p_estimate)
    RETURNING id INTO r_id;
  END IF;
  RETURN NEXT;
END;
$$;
