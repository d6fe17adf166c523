-- The per-user token cap (MANA_AI_USER_MAX_TOKENS_PER_DAY) sums one user's rolling 24 h use
-- across all of the user's agents on every reservation: this index reads only that user's
-- rows of the window. The deployment cap's sum uses idx_token_usage_ts (0005).
--
-- Building an index blocks writes to its table until it is built. On a large token_usage,
-- create it beforehand without blocking (the migration then finds it):
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_token_usage_user_window ON mana_ai.token_usage (user_id, ts);
CREATE INDEX IF NOT EXISTS idx_token_usage_user_window ON mana_ai.token_usage (user_id, ts);
