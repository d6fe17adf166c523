-- Deep research jobs (docs/operations.md "Deep research"): one row per mission. The TypeScript
-- service's columns, plus what the daemon needs to do better: `status`
-- ('pending' while mana-research works; 'completed' or 'failed' once settled), the due slot a
-- settled job belongs to (its answer is reused by a retry of that slot instead of paying for a
-- second job, and dropped once the slot is planned or the mission moves on), the rendered
-- answer, how often the mission was parked, and the last poll problem (a reason label).
CREATE TABLE IF NOT EXISTS mana_ai.mission_research_jobs (
  user_id         TEXT NOT NULL,
  mission_id      TEXT NOT NULL,
  task_id         TEXT NOT NULL,
  provider_id     TEXT NOT NULL,
  submitted_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  last_polled_at  TIMESTAMPTZ,
  status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'completed', 'failed')),
  due_slot        TEXT NOT NULL,
  pending_skips   INT NOT NULL DEFAULT 0,
  last_error      TEXT,
  answer_markdown TEXT,
  settled_at      TIMESTAMPTZ,
  PRIMARY KEY (user_id, mission_id)
);

CREATE INDEX IF NOT EXISTS idx_mission_research_jobs_user_submitted
  ON mana_ai.mission_research_jobs (user_id, submitted_at DESC);
