"""Every Prometheus family of the daemon, on a registry owned by one `Metrics` object.

Names, types, labels and buckets of the reference (reference-v0.6 §11) are kept exactly.
The reference sets a default label `service="mana-ai"` on every series and exports process
metrics with the prefix `mana_ai_`; `_ServiceLabel` and `ProcessCollector` do the same here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

SERVICE = "mana-ai"
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
TICK_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120)
PLANNER_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 30, 60)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ROUND_BUCKETS = (1, 2, 3, 4, 5)
REASONING_CHARS_BUCKETS = (0, 1_000, 4_000, 16_000, 64_000)
QUEUE_WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
DECISIONS = ("ran", "skipped-paused", "skipped-archived", "skipped-concurrency", "skipped-budget",
             "skipped-research-pending", "skipped-user-budget", "skipped-global-budget")
AGENT_STATES = ("active", "paused", "archived", "legacy")
GRANT_SKIP_REASONS = ("not-configured", "expired", "malformed", "wrap-rejected")
LEDGER_WRITES = ("release", "cycle-release", "fail", "usage")
# store/retention.py RETENTION_TABLES (a test keeps them equal)
RETENTION_TABLES = ("mission_runs", "decrypt_audit", "rejected_rows")
# store/bounds.py REASONS (a test keeps them equal)
ROW_REJECT_REASONS = ("row-too-large", "too-deep", "string-too-long", "number-out-of-range", "bad-unicode",
                      "invalid-json", "id-too-long", "slot-too-long")
# planner/storable.py's reasons: why a write-back's row was refused (a test keeps them equal)
WRITE_BACK_REFUSED_REASONS = ("row-too-large", "too-deep", "string-too-long", "number-out-of-range", "bad-unicode")


class _ServiceLabel(Collector):
    """Adds the reference's default label `service="mana-ai"` to every sample."""

    def __init__(self, inner: CollectorRegistry) -> None:
        self._inner = inner

    def collect(self) -> Iterator[Metric]:
        for family in self._inner.collect():
            family.samples = [
                Sample(s.name, {"service": SERVICE, **s.labels}, s.value, s.timestamp, s.exemplar)
                for s in family.samples
            ]
            yield family


class Metrics:
    """The daemon's metric families; build one per process (or per test) and pass it down."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # the reference (prom-client) exports no *_created series
        inner = CollectorRegistry(auto_describe=True)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ServiceLabel(inner))
        ProcessCollector(namespace="mana_ai", registry=inner)
        r = inner
        # HTTP (reference §1.4)
        self.http_requests = Counter("mana_ai_http_requests_total", "HTTP requests",
                                     ["method", "path", "status"], registry=r)
        self.http_duration = Histogram("mana_ai_http_request_duration_seconds", "HTTP request duration",
                                       ["method", "path", "status"], buckets=HTTP_BUCKETS, registry=r)
        # HTTP front (ours): failures kept to one connection, restarts of hypercorn's serve
        self.http_connection_errors = Counter("mana_ai_http_connection_errors_total",
                                              "HTTP connections ended by an error inside hypercorn, kept to"
                                              " that connection", ["kind"], registry=r)
        for kind in ("send-conflict", "unexpected"):
            self.http_connection_errors.labels(kind=kind)
        self.http_front_restarts = Counter("mana_ai_http_front_restarts_total",
                                           "Restarts of the HTTP front after hypercorn's serve failed", registry=r)
        # Tick
        self.ticks = Counter("mana_ai_ticks_total", "Ticks run (overlap-skipped excluded)", registry=r)
        self.tick_duration = Histogram("mana_ai_tick_duration_seconds", "Tick duration",
                                       buckets=TICK_BUCKETS, registry=r)
        self.plans_produced = Counter("mana_ai_plans_produced_total", "Parseable plans", registry=r)
        self.plans_written_back = Counter("mana_ai_plans_written_back_total",
                                          "Plans written back to sync_changes", registry=r)
        self.parse_failures = Counter("mana_ai_parse_failures_total", "Planner parse failures", registry=r)
        self.mission_errors = Counter("mana_ai_mission_errors_total", "Per-mission errors", registry=r)
        self.planner_duration = Histogram("mana_ai_planner_request_duration_seconds",
                                          "LLM request duration", buckets=PLANNER_BUCKETS, registry=r)
        # Snapshots (mission refresh only, as the reference)
        self.snapshots_new = Counter("mana_ai_snapshots_new_total", "New mission snapshots", registry=r)
        self.snapshots_updated = Counter("mana_ai_snapshots_updated_total",
                                         "Updated mission snapshots", registry=r)
        self.snapshot_rows_applied = Counter("mana_ai_snapshot_rows_applied_total",
                                             "sync_changes rows folded into mission snapshots", registry=r)
        # Grants
        self.decrypts = Counter("mana_ai_decrypts_total", "Decrypted fields", ["table"], registry=r)
        self.grant_scope_violations = Counter("mana_ai_grant_scope_violations_total",
                                              "Inputs outside the grant allow-list", ["table"], registry=r)
        self.grant_skips = Counter("mana_ai_grant_skips_total", "Grants that could not be unwrapped",
                                   ["reason"], registry=r)
        # Agents
        self.agent_decisions = Counter("mana_ai_agent_decisions_total", "Agent gating decisions",
                                       ["decision"], registry=r)
        # Budget (reference-later §1.7)
        self.tokens_used = Counter("mana_ai_tokens_used_total", "LLM tokens used (prompt + completion)",
                                   ["agent_id"], registry=r)
        # Ours (not in the reference)
        self.sync_rows_rejected = Counter("mana_ai_sync_rows_rejected_total",
                                          "sync_changes rows or fields coerced or skipped as malformed",
                                          ["table", "kind"], registry=r)
        self.rows_rejected = Counter("mana_ai_rows_rejected_total",
                                     "sync_changes rows skipped whole: they cannot be decoded or stored",
                                     ["reason"], registry=r)
        self.write_backs_refused = Counter("mana_ai_write_backs_refused_total",
                                           "Plans not written back: the row is one the refresh would reject",
                                           ["reason"], registry=r)
        for reason in WRITE_BACK_REFUSED_REASONS:
            self.write_backs_refused.labels(reason=reason)
        self.refresh_rows_read = Counter("mana_ai_refresh_rows_read_total",
                                         "sync_changes rows read by snapshot refresh", ["table"], registry=r)
        self.cycles = Counter("mana_ai_cycles_total", "Cycles started, by what woke the snapshot actor",
                              ["reason"], registry=r)
        self.due_timer_floor_hits = Counter("mana_ai_due_timer_floor_hits_total",
                                            "Due-timer cycles held back to the floor after the previous cycle",
                                            registry=r)
        self.cycle_errors = Counter("mana_ai_cycle_errors_total",
                                    "Cycles that failed before dispatching (DB down, timeout)", registry=r)
        self.cycle_failures_in_a_row = Gauge("mana_ai_cycle_consecutive_failures",
                                             "Cycles failed in a row (0 after a good one)", registry=r)
        self.asyncio_stray_errors = Counter("mana_ai_asyncio_stray_errors_total",
                                            "Errors asyncio reported that nobody awaited (contained, logged)",
                                            ["error"], registry=r)
        self.due_missions = Gauge("mana_ai_due_missions", "Due missions found by the last cycle", registry=r)
        self.last_cycle_completed = Gauge("mana_ai_last_cycle_completed_timestamp_seconds",
                                          "Unix time the last cycle completed", registry=r)
        self.llm_retries = Counter("mana_ai_llm_retries_total", "LLM calls retried", ["reason"], registry=r)
        self.actor_restarts = Counter("mana_ai_agent_actor_restarts_total",
                                      "Agent actors restarted after a crash", registry=r)
        self.research = Counter("mana_ai_research_total", "Web-research pre-steps by outcome (ok or why not)",
                                ["outcome"], registry=r)
        self.llm_timeouts = Counter("mana_ai_llm_timeouts_total", "LLM calls that timed out", registry=r)
        self.ledger_slots = Gauge("mana_ai_run_ledger_slots", "Due slots in the run ledger by status",
                                  ["status"], registry=r)
        self.agent_actors = Gauge("mana_ai_agent_actors", "Live agent actors", registry=r)
        self.mailbox_depth = Gauge("mana_ai_mailbox_depth", "Missions waiting in agent mailboxes, by agent state",
                                   ["agent_state"], registry=r)
        self.notify_listener_up = Gauge("mana_ai_notify_listener_up",
                                        "1 while the LISTEN connection for change notifications is up", registry=r)
        self.http_in_flight = Gauge("mana_ai_http_requests_in_flight", "HTTP requests being served",
                                    registry=r)
        self.lease_renewal_failures = Counter("mana_ai_lease_renewal_failures_total",
                                              "Lease renewals that failed (database or connection trouble)",
                                              registry=r)
        self.ledger_write_failures = Counter(
            "mana_ai_ledger_write_failures_total",
            "Run-ledger and token-ledger writes given up after database trouble (release: a claim "
            "handed back; cycle-release: a failed cycle's claims; fail: a failed attempt; usage: a "
            "usage row or a reservation's release); the lease or the reservation's age settles them",
            ["write"], registry=r)
        self.llm_up = Gauge("mana_ai_llm_up", "1 while the last LLM call succeeded (or none was made yet)",
                            registry=r)
        self.llm_up.set(1)
        # The LLM slots, shared fairly between users (upstream/fair_slots.py)
        self.llm_queue_wait = Histogram("mana_ai_llm_queue_wait_seconds",
                                        "Time an LLM request waited for a slot (0 when one was free)",
                                        buckets=QUEUE_WAIT_BUCKETS, registry=r)
        self.llm_users_waiting = Gauge("mana_ai_llm_users_waiting", "Users with a request waiting for an LLM slot",
                                       registry=r)
        self.llm_missions_waiting = Gauge("mana_ai_llm_missions_waiting", "LLM requests waiting for a slot",
                                          registry=r)
        self.stage_duration = Histogram("mana_ai_stage_duration_seconds",
                                        "Time spent per stage of a cycle (refresh, select, claim, dispatch, "
                                        "housekeeping) and of a mission (inputs, llm, write-back)",
                                        ["stage"], buckets=STAGE_BUCKETS, registry=r)
        # Tool-calling planner (reference-later §1.7; MANA_AI_PLANNER=tools): the reference's
        # buckets; tool is a catalog name or "unknown", outcome recorded|rejected (validated calls)
        self.planner_rounds = Histogram("mana_ai_planner_rounds", "LLM rounds per tool-calling plan",
                                        buckets=ROUND_BUCKETS, registry=r)
        # Reasoning models: characters of reasoning per LLM answer (think blocks, reasoning_content;
        # 0 without), never parsed or stored
        self.llm_reasoning_chars = Histogram("mana_ai_llm_reasoning_chars",
                                             "Characters of reasoning an LLM answer carried before or beside "
                                             "its answer (set aside, never parsed)",
                                             buckets=REASONING_CHARS_BUCKETS, registry=r)
        self.tool_calls = Counter("mana_ai_tool_calls_total", "Tool calls of the tool-calling planner by outcome",
                                  ["tool", "outcome"], registry=r)
        # Deep research (reference-later §1.7): the reference's names and labels; `provider` is
        # the provider mana-research named (gemini-deep-research-max)
        self.research_jobs_submitted = Counter("mana_ai_research_jobs_submitted_total",
                                               "Deep-research jobs submitted to mana-research", ["provider"],
                                               registry=r)
        self.research_jobs_completed = Counter("mana_ai_research_jobs_completed_total",
                                               "Deep-research jobs completed (an empty answer falls back)",
                                               ["provider"], registry=r)
        self.research_jobs_failed = Counter("mana_ai_research_jobs_failed_total",
                                            "Deep-research jobs failed, cancelled, unknown to mana-research or "
                                            "older than MANA_AI_DEEP_RESEARCH_MAX_AGE_MIN (shallow research instead)",
                                            ["provider"], registry=r)
        self.research_jobs_pending_skips = Counter("mana_ai_research_jobs_pending_skips_total",
                                                   "Missions parked while their deep-research job runs",
                                                   registry=r)
        # ours: each failed call to mana-research, or database step of the research desk
        self.research_job_errors = Counter("mana_ai_research_job_errors_total",
                                           "Deep-research submits, polls or database steps that failed, by reason",
                                           ["reason"], registry=r)
        # ours: retention (actors/janitor.py); table is one of RETENTION_TABLES
        self.retention_pruned = Counter("mana_ai_retention_pruned_total",
                                        "Rows deleted because they were past their retention", ["table"], registry=r)
        self.retention_errors = Counter("mana_ai_retention_errors_total",
                                        "Retention rounds of a table that failed (database error or timeout)",
                                        ["table"], registry=r)
        # ours: the deployment's daily token cap (MANA_AI_MAX_TOKENS_PER_DAY; actors/spend.py)
        self.global_budget_exhausted = Gauge("mana_ai_global_budget_exhausted",
                                             "1 while planning is paused at the deployment's daily token cap",
                                             registry=r)
        self.global_tokens_24h = Gauge("mana_ai_global_tokens_24h",
                                       "The deployment's rolling 24 h token use as last read by a reservation "
                                       "(with MANA_AI_MAX_TOKENS_PER_DAY set)", registry=r)
        for table in RETENTION_TABLES:
            self.retention_pruned.labels(table=table)
            self.retention_errors.labels(table=table)
        for decision in DECISIONS:
            self.agent_decisions.labels(decision=decision)
        for reason in GRANT_SKIP_REASONS:
            self.grant_skips.labels(reason=reason)
        for reason in ROW_REJECT_REASONS:
            self.rows_rejected.labels(reason=reason)
        for write in LEDGER_WRITES:
            self.ledger_write_failures.labels(write=write)
        for state in AGENT_STATES:
            self.mailbox_depth.labels(agent_state=state)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage into `mana_ai_stage_duration_seconds{stage=name}` (also when it fails)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stage_duration.labels(stage=name).observe(time.perf_counter() - started)

    def observe_actors(self, mailbox_depths: list[tuple[str, int]]) -> None:
        """Live actors and mailbox depth per agent state, from (state, depth) per actor."""
        self.agent_actors.set(len(mailbox_depths))
        totals = dict.fromkeys(AGENT_STATES, 0)
        for state, depth in mailbox_depths:
            totals[state if state in totals else "active"] += depth
        for state, total in totals.items():
            self.mailbox_depth.labels(agent_state=state).set(total)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The body and content type for `GET /metrics` (0.0.4 text unless asked otherwise)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
