-- Token usage is recorded exactly once per LLM call that produced a plan: a row names the
-- iteration planned from that call, and a second row for the same iteration (a write-back that
-- committed while its acknowledgement was lost, then recorded again by its run) is refused by
-- this key and skipped (insert_used_tokens: ON CONFLICT DO NOTHING). Rows recorded twice before
-- this migration are removed first, keeping the first of each.
DELETE FROM mana_ai.token_usage later
USING mana_ai.token_usage first
WHERE later.iteration_id IS NOT NULL AND later.user_id = first.user_id
  AND later.iteration_id = first.iteration_id AND later.id > first.id;

CREATE UNIQUE INDEX IF NOT EXISTS idx_token_usage_iteration
  ON mana_ai.token_usage (user_id, iteration_id) WHERE iteration_id IS NOT NULL;
