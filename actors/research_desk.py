"""ResearchDesk: deep-research jobs at mana-research, in front of the agent registry.

The snapshot actor dispatches every claimed mission here (the desk is its `Dispatcher`). A
mission whose objective and concept do not ask for deep research goes straight on to the
registry: a regex over two strings, no I/O. One that does is handled in the desk's own
nursery, at most `concurrency` at a time, before it reaches any agent actor:

* a job of the mission is pending → poll it (15 s): still `queued`/`running` (or the poll
  failed) → the mission is **parked**: the claim goes back without using an attempt, due again
  after `poll_interval_s`; outcome `skipped-research-pending`. It never entered a mailbox, so
  it holds no concurrency slot, and nothing was decrypted, audited or sent to the LLM;
* `completed` with an answer → the mission goes to the registry with the answer as its
  `__web-research__` input (`MissionDue.research`), instead of the shallow research;
* `failed`, `cancelled`, unknown to mana-research (404), an empty answer, or older than
  `max_age_s` → the mission goes to the registry as usual (shallow research);
* no job (or one settled for an earlier slot) and submitting is on → submit one (30 s) and
  park; a failed submit → the mission goes to the registry as usual, at once.

A settled job stays with its due slot until that slot is planned (`MissionRunner` then drops
it): a retry of the slot after a failed plan reuses the answer, or the failure, instead of
paying for a second job. Database trouble on the way falls back to planning now (a failed
read or record) or leaves the claim to expire (a failed park): one log line and a metric, and
the desk goes on. At shutdown it starts nothing new; work in flight gets the grace period,
then is cancelled and hands its claims back.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

import asyncpg
import trio

from actors.leases import LeaseKeeper
from actors.messages import SKIPPED_RESEARCH_PENDING, SKIPPED_SHUTDOWN, DeepResearch, MissionDue, MissionOutcome
from observability.metrics import Metrics
from planner.deep_research import (
    DeepAnswer,
    deep_research_input,
    deep_research_markdown,
    research_query,
    wants_deep_research,
)
from store.errors import DATABASE_ERRORS
from store.research_jobs import (
    ResearchJob,
    delete_job,
    load_job,
    park_pending,
    prune_jobs,
    record_submitted,
    settle_job,
)
from upstream.deep_research_client import CallFailed, DeepResearchClient

log = logging.getLogger(__name__)

_DB_ERRORS_OR_TIMEOUT: tuple[type[Exception], ...] = (*DATABASE_ERRORS, trio.TooSlowError)
_DB_TIMEOUT_S = 10.0
_PRUNE_EVERY_S = 3600.0
_KEEP_S = 7 * 86400.0  # rows nobody came back for are pruned after this (or twice the max age)


class Registry(Protocol):
    """What the desk needs of the agent registry."""

    async def deliver(self, due: MissionDue) -> None: ...
    async def skip(self, due: MissionDue, decision: str) -> None: ...
    def retire(self, live_agents: Iterable[tuple[str, str]]) -> int: ...


class ResearchDesk:
    """A `Dispatcher` in front of the registry; owns the deep-research tasks."""

    def __init__(self, registry: Registry, client: DeepResearchClient, pool: asyncpg.Pool, leases: LeaseKeeper,
                 metrics: Metrics, *, submit: bool, max_age_s: float, poll_interval_s: float = 30.0,
                 concurrency: int = 4) -> None:
        self._registry = registry
        self._client = client
        self._pool = pool
        self._leases = leases
        self._metrics = metrics
        self._submit = submit  # False: only jobs already pending are polled (MANA_AI_DEEP_RESEARCH off)
        self._max_age_s = max_age_s
        self._poll_interval_s = poll_interval_s
        self._limiter = trio.CapacityLimiter(concurrency)
        self._nursery: trio.Nursery | None = None
        self._active = 0
        self._stopping = False
        self._stop_deadline: float | None = None
        self._drained = trio.Event()
        # told when a parked slot is due again (the snapshot actor's due timer; set by the runtime)
        self.due_again: Callable[[float], None] = _unscheduled

    # -- the Dispatcher protocol ----------------------------------------------------------

    async def deliver(self, due: MissionDue) -> None:
        mission = due.mission
        if self._stopping or not wants_deep_research(mission.objective, mission.concept_markdown):
            await self._registry.deliver(due)  # the hot path: nothing added
            return
        assert self._nursery is not None, "ResearchDesk.run() is not running"
        self._active += 1
        self._nursery.start_soon(self._handle, due)

    def retire(self, live_agents: Iterable[tuple[str, str]]) -> int:
        return self._registry.retire(live_agents)

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Owns the desk's tasks and prunes forgotten rows hourly; ends when `stop()` cancels it."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await self._prune()
                await trio.sleep(_PRUNE_EVERY_S)

    async def stop(self, grace_s: float) -> None:
        """Shutdown: missions go straight on (the registry hands them back); work in flight gets
        `grace_s`, then is cancelled and hands its claims back. Idempotent."""
        self._stopping = True
        if self._stop_deadline is None:
            self._stop_deadline = trio.current_time() + grace_s
        if self._active == 0:
            self._drained.set()
        with trio.move_on_at(self._stop_deadline):
            await self._drained.wait()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # -- one mission ----------------------------------------------------------------------

    async def _handle(self, due: MissionDue) -> None:
        handed = False

        async def hand_on(item: MissionDue) -> None:
            nonlocal handed
            handed = True
            await self._registry.deliver(item)

        async def park(step: Callable[[], Awaitable[None]], job: str, age_s: float) -> None:
            nonlocal handed
            handed = True
            await self._park(due, step, job, age_s)

        try:
            async with self._limiter:
                if not self._stopping:
                    await self._settle(due, hand_on, park)
        except Exception as exc:  # noqa: BLE001 - the desk's boundary: a bug here must not end the daemon
            self._metrics.research_job_errors.labels(reason="crashed").inc()
            log.error("research_job.crashed", exc_info=True, extra={**_context(due), "error": type(exc).__name__})
            if not handed:
                await hand_on(due)  # plan it as if there were no deep research
        finally:
            if not handed:  # shutdown (or cancelled): give the slot back at once
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    await self._registry.skip(due, SKIPPED_SHUTDOWN)
            self._active -= 1
            if self._stopping and self._active == 0:
                self._drained.set()

    async def _settle(self, due: MissionDue, hand_on: Callable[[MissionDue], Awaitable[None]],
                      park: Callable[[Callable[[], Awaitable[None]], str, float], Awaitable[None]]) -> None:
        mission, claim = due.mission, due.claim
        try:
            with trio.fail_after(_DB_TIMEOUT_S):
                job = await load_job(self._pool, mission.user_id, mission.id)
        except _DB_ERRORS_OR_TIMEOUT as exc:
            self._store_failed(due, "load", exc)
            await hand_on(due)
            return
        if job is not None and job.status != "pending":
            if job.due_slot == claim.due_slot:  # settled for this very slot: a retry reuses it
                await hand_on(self._settled(due, job))
                return
            if not self._submit:  # settled for an earlier slot, and no new job will replace it
                await self._forget(due, job)
            job = None
        if job is not None:
            await self._poll(due, job, hand_on, park)
        elif self._submit and self._leases.holds(claim):  # a lost claim pays for nothing
            await self._submit_job(due, hand_on, park)
        else:
            await hand_on(due)

    async def _poll(self, due: MissionDue, job: ResearchJob, hand_on: Callable[[MissionDue], Awaitable[None]],
                    park: Callable[[Callable[[], Awaitable[None]], str, float], Awaitable[None]]) -> None:
        mission, claim = due.mission, due.claim
        if job.age_s > self._max_age_s:
            await hand_on(await self._failed(due, job, "too-old"))
            return
        state = await self._client.poll(mission.user_id, job.task_id)
        if isinstance(state, CallFailed):
            if state.status == 404:  # mana-research does not know it (any more): polling will not help
                await hand_on(await self._failed(due, job, "unknown-task"))
                return
            self._call_failed(due, state, job.task_id)
            reason = state.reason
            await park(lambda: park_pending(self._pool, claim, job.task_id, last_error=reason,
                                            reason=SKIPPED_RESEARCH_PENDING, retry_in_s=self._poll_interval_s),
                       job.task_id, job.age_s)
            return
        if state.status in ("queued", "running"):
            await park(lambda: park_pending(self._pool, claim, job.task_id, last_error=None,
                                            reason=SKIPPED_RESEARCH_PENDING, retry_in_s=self._poll_interval_s),
                       job.task_id, job.age_s)
            return
        if state.status != "completed":
            await hand_on(await self._failed(due, job, state.status))
            return
        self._metrics.research_jobs_completed.labels(provider=job.provider_id).inc()
        if state.answer is None:
            log.info("research_job.completed", extra={**_context(due), "task": job.task_id, "empty": True,
                                                      "age_s": round(job.age_s)})
            await hand_on(await self._failed(due, job, "empty-answer", count=False))
            return
        await hand_on(await self._completed(due, job, state.answer))

    async def _submit_job(self, due: MissionDue, hand_on: Callable[[MissionDue], Awaitable[None]],
                          park: Callable[[Callable[[], Awaitable[None]], str, float], Awaitable[None]]) -> None:
        mission, claim = due.mission, due.claim
        submitted = await self._client.submit(mission.user_id, research_query(mission.objective))
        if isinstance(submitted, CallFailed):
            self._call_failed(due, submitted, None)
            await hand_on(due)  # plan now, with the shallow research
            return
        self._metrics.research_jobs_submitted.labels(provider=submitted.provider_id).inc()
        log.info("research_job.submitted", extra={**_context(due), "task": submitted.task_id,
                                                  "provider": submitted.provider_id})
        await park(lambda: record_submitted(self._pool, claim, submitted.task_id, submitted.provider_id,
                                            reason=SKIPPED_RESEARCH_PENDING, retry_in_s=self._poll_interval_s),
                   submitted.task_id, 0.0)

    # -- outcomes -------------------------------------------------------------------------

    async def _park(self, due: MissionDue, step: Callable[[], Awaitable[None]], task_id: str, age_s: float) -> None:
        """The mission waits for its job: counted, logged, the claim handed back (no attempt used,
        due again after the poll interval) and the cycle told."""
        self._metrics.research_jobs_pending_skips.inc()
        if due.agent is not None:
            self._metrics.agent_decisions.labels(decision=SKIPPED_RESEARCH_PENDING).inc()
        log.info("mission.skipped", extra={**_context(due), "decision": SKIPPED_RESEARCH_PENDING,
                                           "task": task_id, "age_s": round(age_s)})
        self._leases.settling(due.claim)
        try:
            with trio.fail_after(_DB_TIMEOUT_S):
                await step()
        except _DB_ERRORS_OR_TIMEOUT as exc:  # the lease expires on its own; the slot is due again then
            self._store_failed(due, "park", exc)
        else:
            self.due_again(self._poll_interval_s)
        finally:
            self._leases.let_go(due.claim)
            due.batch.report(MissionOutcome(due.mission.id, SKIPPED_RESEARCH_PENDING))

    def _settled(self, due: MissionDue, job: ResearchJob) -> MissionDue:
        """A job settled earlier for this slot (its plan failed and is retried)."""
        if job.status == "completed" and job.answer_markdown:
            found = deep_research_input(due.mission.objective, job.answer_markdown)
            return dataclasses.replace(due, research=DeepResearch(found))
        return dataclasses.replace(due, research=DeepResearch(None))

    async def _completed(self, due: MissionDue, job: ResearchJob, answer: DeepAnswer) -> MissionDue:
        markdown = deep_research_markdown(due.mission.objective, answer)
        log.info("research_job.completed", extra={**_context(due), "task": job.task_id, "empty": False,
                                                  "citations": len(answer.citations), "chars": len(answer.text),
                                                  "age_s": round(job.age_s)})
        try:
            with trio.fail_after(_DB_TIMEOUT_S):
                await settle_job(self._pool, due.claim, job.task_id, "completed", answer_markdown=markdown)
        except _DB_ERRORS_OR_TIMEOUT as exc:  # still pending there: a retry polls again and gets it again
            self._store_failed(due, "settle", exc)
        return dataclasses.replace(due, research=DeepResearch(deep_research_input(due.mission.objective, markdown)))

    async def _failed(self, due: MissionDue, job: ResearchJob, reason: str, *, count: bool = True) -> MissionDue:
        """The job gave nothing: the mission falls back to the shallow research, for this slot
        (a retry of the slot does not submit again)."""
        if count:
            self._metrics.research_jobs_failed.labels(provider=job.provider_id).inc()
            log.warning("research_job.failed", extra={**_context(due), "task": job.task_id, "reason": reason,
                                                      "age_s": round(job.age_s), "polls": job.pending_skips})
        try:
            with trio.fail_after(_DB_TIMEOUT_S):
                await settle_job(self._pool, due.claim, job.task_id, "failed", reason=reason)
        except _DB_ERRORS_OR_TIMEOUT as exc:
            self._store_failed(due, "settle", exc)
        return dataclasses.replace(due, research=DeepResearch(None))

    async def _forget(self, due: MissionDue, job: ResearchJob) -> None:
        try:
            with trio.fail_after(_DB_TIMEOUT_S):
                await delete_job(self._pool, due.mission.user_id, due.mission.id, job.task_id)
        except _DB_ERRORS_OR_TIMEOUT as exc:
            self._store_failed(due, "delete", exc)

    def _call_failed(self, due: MissionDue, failed: CallFailed, task_id: str | None) -> None:
        self._metrics.research_job_errors.labels(reason=failed.reason).inc()
        log.warning("research_job.call_failed", extra={**_context(due), "reason": failed.reason, "task": task_id,
                                                       "error": failed.error})

    def _store_failed(self, due: MissionDue, step: str, exc: Exception) -> None:
        self._metrics.research_job_errors.labels(reason="database").inc()
        log.error("research_job.store_failed", extra={**_context(due), "step": step,
                                                      "error": f"{type(exc).__name__}: {exc}"})

    async def _prune(self) -> None:
        try:
            with trio.fail_after(_DB_TIMEOUT_S):
                deleted = await prune_jobs(self._pool, older_than_s=max(_KEEP_S, 2 * self._max_age_s))
        except _DB_ERRORS_OR_TIMEOUT as exc:
            self._metrics.research_job_errors.labels(reason="database").inc()
            log.error("research_job.store_failed", extra={"step": "prune", "error": f"{type(exc).__name__}: {exc}"})
            return
        if deleted:
            log.info("research_jobs.pruned", extra={"rows": deleted})


def _unscheduled(delay_s: float) -> None:
    """No due timer to tell (no scheduler, tests)."""


def _context(due: MissionDue) -> dict[str, object]:
    return {"mission": due.mission.id, "user": due.mission.user_id,
            "agent": due.agent.id if due.agent else "legacy", "slot": due.claim.due_slot}
