"""Messages and results passed between actors and the HTTP front (frozen where shared)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import trio

from planner.prompt import ResolvedInput
from store.records import Agent, Mission
from store.runs import Claim


@dataclass
class TickStats:
    """The TypeScript service's `TickStats` (the body of `/internal/tick`); `as_json` keeps its exact
    keys and order."""

    scanned_at: str
    due_mission_count: int = 0
    plans_produced: int = 0
    plans_written_back: int = 0
    parse_failures: int = 0
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "scannedAt": self.scanned_at,
            "dueMissionCount": self.due_mission_count,
            "plansProduced": self.plans_produced,
            "plansWrittenBack": self.plans_written_back,
            "parseFailures": self.parse_failures,
            "errors": list(self.errors),
        }


class Cycle:
    """One snapshot cycle; requesters wait on `wait()` and read `stats` afterwards."""

    def __init__(self, reason: str) -> None:
        self.reason = reason  # "interval" | "manual"
        self.stats: TickStats | None = None
        self._done = trio.Event()

    def finish(self, stats: TickStats) -> None:
        self.stats = stats
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> TickStats:
        await self._done.wait()
        assert self.stats is not None
        return self.stats


# What an agent actor reports for one mission. The first four feed TickStats.
PLANNED = "planned"
EMPTY_PLAN = "empty-plan"
PARSE_FAILED = "parse-failed"
ERROR = "error"
SKIPPED_ARCHIVED = "skipped-archived"
SKIPPED_PAUSED = "skipped-paused"
SKIPPED_CONCURRENCY = "skipped-concurrency"
SKIPPED_BUDGET = "skipped-budget"
SKIPPED_USER_BUDGET = "skipped-user-budget"  # the user's MANA_AI_USER_MAX_TOKENS_PER_DAY is reached
SKIPPED_GLOBAL_BUDGET = "skipped-global-budget"  # the deployment's MANA_AI_MAX_TOKENS_PER_DAY is reached
SKIPPED_SHUTDOWN = "skipped-shutdown"
SKIPPED_RESEARCH_PENDING = "skipped-research-pending"  # parked while its deep-research job runs
SKIPPED_LLM_DOWN = "skipped-llm-down"  # parked while the LLM circuit is open (no attempt used)


@dataclass(frozen=True)
class MissionOutcome:
    mission_id: str
    kind: str
    error: str | None = None
    plan_produced: bool = False  # a plan was parsed (even if writing it failed)
    iteration_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class TickBatch:
    """Collects the outcomes of the missions one cycle dispatched into its `TickStats`."""

    def __init__(self, stats: TickStats) -> None:
        self.stats = stats
        self._expected = 0
        self._reported = 0
        self._sealed = False
        self._done = trio.Event()
        self.truncated = False  # more missions were due than the cycle dispatched

    def expect(self) -> None:
        """One more mission was dispatched (each reports exactly once)."""
        self._expected += 1
        self.stats.due_mission_count += 1

    def seal(self) -> None:
        """No more missions will be dispatched; done once every expected one reported."""
        self._sealed = True
        self._check()

    def report(self, outcome: MissionOutcome) -> None:
        self._reported += 1
        stats = self.stats
        if outcome.plan_produced:
            stats.plans_produced += 1
        if outcome.kind in (PLANNED, EMPTY_PLAN):
            stats.plans_written_back += 1
        elif outcome.kind == PARSE_FAILED:
            stats.parse_failures += 1
        elif outcome.kind == ERROR:
            stats.errors.append(f"mission={outcome.mission_id}: {outcome.error}")
        self._check()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> TickStats:
        await self._done.wait()
        return self.stats

    def _check(self) -> None:
        if self._sealed and self._reported >= self._expected:
            self._done.set()


@dataclass(frozen=True)
class DeepResearch:
    """What the research desk settled for a mission's slot (actors/research_desk.py)."""

    input: ResolvedInput | None  # the job's answer (unwrapped); None: it failed, use the shallow research


@dataclass(frozen=True)
class MissionDue:
    """A claimed due mission on its way to the agent actor that runs it."""

    mission: Mission
    agent: Agent | None  # None: legacy (no agentId, or an unknown/deleted agent)
    claim: Claim
    snapshot_cursor: datetime
    batch: TickBatch
    research: DeepResearch | None = None  # set by the research desk for a slot whose deep research settled
