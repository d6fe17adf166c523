-- The token ledger (an agent's `maxTokensPerDay` over a rolling 24 h): one row per LLM-backed
-- run. A run first *reserves* an estimate (status 'reserved'), then settles to the reported usage
-- ('used') or gives the reservation back ('released'). The rolling 24 h sum per agent counts
-- used tokens plus live reservations, so concurrent runs cannot all pass a nearly spent budget.
CREATE TABLE IF NOT EXISTS mana_ai.token_usage (
  id                BIGSERIAL PRIMARY KEY,
  user_id           TEXT NOT NULL,
  agent_id          TEXT NOT NULL,
  mission_id        TEXT NOT NULL,
  iteration_id      TEXT,
  status            TEXT NOT NULL CHECK (status IN ('reserved', 'used', 'released')),
  reserved_tokens   INT NOT NULL DEFAULT 0,
  prompt_tokens     INT NOT NULL DEFAULT 0,
  completion_tokens INT NOT NULL DEFAULT 0,
  ts                TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idx_token_usage_agent_window
  ON mana_ai.token_usage (user_id, agent_id, ts DESC);

CREATE INDEX IF NOT EXISTS idx_token_usage_ts
  ON mana_ai.token_usage (ts);
