-- The run ledger: one row per (user, mission, due slot), where the
-- due slot is the mission's `nextRunAt` string. A slot is planned at most once; claims carry a
-- lease (owner instance, token, expiry); failures back off and end as `dead`.
CREATE TABLE IF NOT EXISTS mana_ai.mission_runs (
  user_id           TEXT NOT NULL,
  mission_id        TEXT NOT NULL,
  due_slot          TEXT NOT NULL,
  status            TEXT NOT NULL CHECK (status IN ('running', 'retry', 'planned', 'dead')),
  attempts          INT NOT NULL DEFAULT 0,
  lease_owner       TEXT,
  lease_token       UUID,
  lease_expires_at  TIMESTAMPTZ,
  next_attempt_at   TIMESTAMPTZ,
  outcome           TEXT,
  last_error        TEXT,
  error_history     JSONB NOT NULL DEFAULT '[]',
  iteration_id      TEXT,
  prompt_tokens     INT,
  completion_tokens INT,
  model             TEXT,
  prompt_hash       TEXT,
  snapshot_cursor   TIMESTAMPTZ,
  created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
  finished_at       TIMESTAMPTZ,
  PRIMARY KEY (user_id, mission_id, due_slot)
);

CREATE INDEX IF NOT EXISTS idx_mission_runs_status
  ON mana_ai.mission_runs (status, next_attempt_at);
