"""One mission run: prompt → LLM → strict parse → fenced write-back, with the ledger kept true.

`MissionRunner.run` never raises for a mission's own failures: each ends as a `MissionOutcome`
(and a ledger retry or dead slot). It is the per-mission exception boundary: a bug in one
mission must not take an agent actor or the daemon down (the cycle, the registry's supervision,
the research desk and the janitor each have their own).

With `MANA_AI_PLANNER=tools` the prompt, LLM and parse steps are the tool-calling loop
(`planner.tool_loop`); inputs, web research, the token reservation, the write-back and the
ledger are the same.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import time
import uuid
from contextvars import ContextVar
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import asyncpg
import trio

from actors.clock import Clock, utc_now
from actors.groups import single_leaf
from actors.hand_back import hand_back
from actors.inputs import InputResolver, Inputs
from actors.leases import LeaseKeeper
from actors.spend import GlobalBudget
from actors.messages import (
    EMPTY_PLAN,
    ERROR,
    PARSE_FAILED,
    PLANNED,
    SKIPPED_BUDGET,
    SKIPPED_GLOBAL_BUDGET,
    SKIPPED_LLM_DOWN,
    SKIPPED_SHUTDOWN,
    SKIPPED_USER_BUDGET,
    MissionDue,
    MissionOutcome,
)
from observability.metrics import Metrics
from observability.redact import Redactor, safe_url
from observability.tracing import Attributes, NoTracing, Tracing
from planner import (
    AI_AVAILABLE_TOOLS,
    LEGACY_AI_PRINCIPAL,
    AgentContext,
    ParseFailure,
    PolicyError,
    Plan,
    PlannerMessages,
    PromptMission,
    allowed_tool_names,
    build_planner_prompt,
    filter_tools_by_agent_policy,
    iso_ms,
    mission_runner_actor,
    parse_planner_response,
    plan_to_iteration,
    with_agent_context,
)
from planner.inputs import USER_DATA_CLOSE, USER_DATA_NOTICE, USER_DATA_OPEN
from planner.parse import CUT_OFF_REASON, storage_problem
from planner.plan_schema import response_format
from planner.prompt import ResolvedInput
from planner.storable import RowBounds
from planner.chat import AssistantTurn
from planner.prompt_tools import build_tools_prompt
from planner.schemas import FunctionSchema, tools_to_function_schemas
from planner.tool_loop import Budget, BudgetView, LoopResult, WireMessage, run_tool_loop, tool_label
from planner.tools import Tool
from planner.research import research_input, research_markdown, wants_research
from settings import Settings
from store.errors import DATABASE_ERRORS, LeaseLost, RowRefused
from store.records import Agent
from store.research_jobs import forget_settled
from store.runs import backoff_s, fail_run
from store.usage import (
    GLOBAL_CAP,
    USER_CAP,
    Reservation,
    TokenUsage,
    record_usage,
    release_tokens,
    reserve_tokens,
    usage_24h,
)
from store.group_commit import GroupCommit
from store.sync_schema import V0_6_SCHEMA, SyncSchema
from store.writeback import Provenance, WriteBack, WriteRequest, write_back
from upstream.circuit import LlmCircuit, LlmCircuitOpen
from upstream.errors import LlmClosed, LlmError, LlmHttpError, LlmTimeout
from upstream.fair_slots import SlotKey
from upstream.llm import Completion, LlmClient
from upstream.research_client import ResearchClient, ResearchFailed

log = logging.getLogger(__name__)

# Before a call the prompt is known but not the reply: reserve ~chars/4 for the prompt plus
# this much for the completion; the reported usage replaces the estimate afterwards.
_CHARS_PER_TOKEN = 4
_COMPLETION_ESTIMATE = 1024

_RUN_STARTED: ContextVar[float] = ContextVar("mana_ai_mission_run_started")

_DB_ERRORS = DATABASE_ERRORS
_DB_ERRORS_OR_TIMEOUT: tuple[type[Exception], ...] = (*DATABASE_ERRORS, trio.TooSlowError)


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 30.0
    max_s: float = 3600.0


class MissionRunner:
    """Runs one claimed mission at a time per call; shared by every agent actor."""

    def __init__(self, pool: asyncpg.Pool, llm: LlmClient, settings: Settings, metrics: Metrics,
                 *, leases: LeaseKeeper, clock: Clock = utc_now, retry: RetryPolicy = RetryPolicy(),
                 jitter: Callable[[], float] = random.random, tracing: Tracing | None = None,
                 inputs: InputResolver | None = None, research: ResearchClient | None = None,
                 writer: GroupCommit | None = None, sync: SyncSchema = V0_6_SCHEMA,
                 global_budget: GlobalBudget | None = None, circuit: LlmCircuit | None = None) -> None:
        self._circuit = circuit  # None: no circuit breaker (every failure costs an attempt)
        # the deployment's daily cap as reservations see it (shown by /health)
        self.global_budget = global_budget or GlobalBudget(settings.max_tokens_per_day, metrics)
        self._writer = writer  # None: each write-back is its own round trip
        self._sync = sync  # the sync_changes generation (the writer has its own copy)
        self._redact = Redactor(settings.secrets())  # errors go to logs, the ledger and TickStats
        self._tracing: Tracing = tracing or NoTracing()
        self._inputs = inputs  # None: missions are planned from their own text only
        self._research = research  # None: no web-research pre-step (MANA_AI_RESEARCH_TOKEN unset)
        self._pool = pool
        self._leases = leases  # holds the claim from dispatch on; tells when it is lost
        self._llm = llm
        self._settings = settings
        # what a plan must respect to be written back: the refresh's bounds (MANA_AI_MAX_*)
        self._bounds = RowBounds(settings.max_json_depth, settings.max_string_bytes, settings.max_id_chars,
                                 settings.max_row_bytes)
        self._metrics = metrics
        self._clock = clock
        self._retry = retry
        self._jitter = jitter
        # told when a slot is due again after a retry's back-off or a hand-back (the snapshot
        # actor's due timer, computed without it; set by the runtime)
        self.due_again: Callable[[float], None] = _unscheduled

    async def run(self, due: MissionDue) -> MissionOutcome:
        """Plan `due.mission` under its claim, in a span of its own (ids only, no user content)."""
        attributes: Attributes = {"mana_ai.mission.id": due.mission.id, "mana_ai.user.id": due.mission.user_id,
                      "mana_ai.agent.id": due.agent.id if due.agent else "legacy",
                      "mana_ai.due_slot": due.claim.due_slot, "mana_ai.attempt": due.claim.attempt}
        with self._tracing.span("mana_ai.mission", attributes) as span:
            outcome = await self._run(due)
            span.set_attributes({"mana_ai.outcome": outcome.kind})
            if outcome.kind in (ERROR, PARSE_FAILED):
                span.fail(outcome.error or outcome.kind)
            return outcome

    async def _run(self, due: MissionDue) -> MissionOutcome:
        """The claim is settled whatever happens, and let go of afterwards.

        The lease keeper renews the claim's lease from dispatch on; when it is lost, a mission
        that has not started yet never starts, and a running one is cancelled by the keeper
        (through `guard`) unless it is already settling with a fenced write.
        """
        settled = False
        _RUN_STARTED.set(time.perf_counter())  # every log line of this run carries its duration
        try:
            if not self._leases.holds(due.claim):  # lost while it waited in the mailbox
                settled = True
                return self._lease_lost(due, queued=True)
            outcome: MissionOutcome | None = None
            with self._leases.guard(due.claim):
                outcome = await self._plan(due)
            settled = True
            return self._lease_lost(due) if outcome is None else outcome
        except Exception as exc:  # noqa: BLE001 - the per-mission boundary (see module docstring)
            log.error("mission.crashed", exc_info=True, extra=self._context(due))
            leaf = single_leaf(exc)
            outcome = await self._fail(due, ERROR, f"{type(leaf).__name__}: {leaf}")
            settled = True
            return outcome
        finally:
            if not settled:  # cancelled (shutdown, actor crash): give the slot back at once
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    if await self._release(due, "cancelled"):
                        self.due_again(0.0)
            self._leases.let_go(due.claim)
            log.debug("mission.finished", extra=self._context(due))

    async def _release(self, due: MissionDue, reason: str) -> bool:
        """Hand the claim back (fenced, retried); when the database stays away the lease expires
        on its own. False then (logged and counted)."""
        self._leases.settling(due.claim)
        return await hand_back(self._pool, self._metrics, due.claim, reason, self._context(due))

    async def _plan(self, due: MissionDue) -> MissionOutcome:
        mission, agent = due.mission, due.agent
        if self._circuit is not None and not self._circuit.admits():
            return await self._park(due)  # delivered before the circuit opened: nothing done yet
        try:
            tools = filter_tools_by_agent_policy(AI_AVAILABLE_TOOLS, agent.policy if agent else None)
        except PolicyError as exc:
            return await self._fail(due, ERROR, str(exc))
        iteration_id = str(uuid.uuid4())  # before resolving inputs: the decrypt audit names it
        try:
            with self._metrics.stage("inputs"):
                resolved = await self._resolve_inputs(due, iteration_id)
        except _DB_ERRORS as exc:
            return await self._fail(due, ERROR, f"input resolution failed: {exc}")
        if self._settings.planner == "tools":
            return await self._plan_with_tools(due, tools, resolved, iteration_id)
        messages = build_planner_prompt(
            PromptMission(mission.title, mission.concept_markdown, mission.objective, mission.iterations),
            resolved.inputs, tools)
        if resolved.wrapped:
            messages = PlannerMessages(messages.system + USER_DATA_NOTICE, messages.user)
        if agent is not None:
            messages = with_agent_context(messages, AgentContext(agent.name, agent.role, agent.system_prompt,
                                                                 agent.memory))
        reservation = await self._reserve(due, len(messages.system) + len(messages.user))
        if reservation is not None and not reservation.granted:
            return await self._over_budget(due, reservation)
        reservation_id = reservation.id if reservation is not None else None
        fmt = response_format(self._settings.llm_response_format, tools, self._bounds)  # None: "none"
        with self._metrics.stage("llm"):
            completion = await self._call_llm(messages, reservation_id, _slot_key(due), fmt)
        if isinstance(completion, LlmClosed):
            return await self._hand_back(due, SKIPPED_SHUTDOWN)
        if isinstance(completion, LlmTimeout):  # the server goes on generating: charge it (not released)
            await self._record_usage(due, self._abandoned(due, reservation_id,
                                                          len(messages.system) + len(messages.user)))
        if isinstance(completion, LlmError):
            if self._outage(due, completion):
                return await self._park(due)
            hint = (f" (sent with MANA_AI_LLM_RESPONSE_FORMAT={self._settings.llm_response_format}: a server "
                    "that does not take this format answers so; docs/configuration.md names the one that fits)"
                    if fmt is not None and isinstance(completion, LlmHttpError) else "")
            return await self._fail(due, ERROR, str(completion) + hint)
        parsed = (ParseFailure(CUT_OFF_REASON, completion.content) if completion.finish_reason == "length"
                  else parse_planner_response(completion.content, allowed_tool_names(tools), self._bounds,
                                              reasoning_chars=completion.reasoning_chars))
        usage = TokenUsage(reservation_id, mission.user_id, agent.id if agent else LEGACY_AI_PRINCIPAL, mission.id,
                           None if isinstance(parsed, ParseFailure) else iteration_id,
                           completion.prompt_tokens, completion.completion_tokens)
        self._metrics.tokens_used.labels(agent_id=usage.agent_id).inc(
            completion.prompt_tokens + completion.completion_tokens)
        if isinstance(parsed, ParseFailure):
            await self._record_usage(due, usage)  # the tokens were spent all the same
            return await self._parse_failed(due, parsed.reason, len(parsed.raw), completion=completion)
        self._metrics.plans_produced.inc()
        provenance = Provenance(_plan_kind(parsed), completion.model, _prompt_hash(messages.system, messages.user),
                                completion.prompt_tokens, completion.completion_tokens)
        return await self._write_plan(due, parsed, iteration_id, provenance, usage)

    async def _parse_failed(self, due: MissionDue, reason: str, raw_chars: int, *,
                            completion: Completion | None = None,
                            tokens: tuple[int, int] = (0, 0)) -> MissionOutcome:
        self._metrics.parse_failures.inc()
        # the reason only: raw model output may echo user content, which never goes to logs
        log.warning("mission.parse_failed", extra={**self._context(due), "reason": reason, "raw_chars": raw_chars})
        return await self._fail(due, PARSE_FAILED, reason, completion=completion, tokens=tokens)

    async def _write_plan(self, due: MissionDue, plan: Plan, iteration_id: str, provenance: Provenance,
                          usage: TokenUsage, **log_extra: object) -> MissionOutcome:
        """Write a parsed plan back (fenced, group-committed), count it and report the outcome."""
        mission, agent = due.mission, due.agent
        now_iso = iso_ms(self._clock())
        iteration = plan_to_iteration(plan, iteration_id, now_iso)
        actor = mission_runner_actor((agent.id, agent.name) if agent else None, mission.id, iteration_id,
                                     mission.objective)
        tokens = (provenance.prompt_tokens, provenance.completion_tokens)
        self._leases.settling(due.claim)  # from here the fenced write-back decides, not the keeper
        try:
            with self._metrics.stage("write-back"):
                await self._write_back(WriteRequest(due.claim, WriteBack(iteration, actor, now_iso), provenance, usage))
        except LeaseLost:
            await self._record_usage(due, usage)
            return self._lease_lost(due)
        except RowRefused as exc:  # nothing written: the refresh would have rejected the row
            await self._record_usage(due, usage)
            self._metrics.write_backs_refused.labels(reason=exc.reason).inc()
            log.warning("mission.write_back_refused", extra={**self._context(due), "reason": exc.reason,
                                                             "detail": exc.detail})
            return await self._fail(due, ERROR, f"write-back refused: {exc}", plan_produced=True, tokens=tokens)
        except _DB_ERRORS as exc:
            await self._record_usage(due, usage)  # the write-back transaction rolled it back
            return await self._fail(due, ERROR, f"write-back failed: {exc}", plan_produced=True, tokens=tokens)
        self._metrics.plans_written_back.inc()
        if agent is not None:
            self._metrics.agent_decisions.labels(decision="ran").inc()
        if due.research is not None:
            await self._forget_research(due)
        log.info("mission.planned", extra={**self._context(due), "steps": len(plan.steps),
                                           "iteration": iteration_id, "tokens": sum(tokens), **log_extra})
        return MissionOutcome(mission.id, provenance.outcome, plan_produced=True, iteration_id=iteration_id,
                              prompt_tokens=tokens[0], completion_tokens=tokens[1])

    async def _write_back(self, request: WriteRequest) -> None:
        if self._writer is not None:
            await self._writer.write(request)
        else:
            await write_back(self._pool, request.claim, request.write, request.provenance, request.usage,
                             sync=self._sync, bounds=self._bounds)

    async def _call_llm(self, messages: PlannerMessages, reservation_id: int | None,
                        who: SlotKey, fmt: Mapping[str, object] | None = None) -> Completion | LlmError:
        """The LLM call; a reservation is given back when the call fails or is cancelled."""
        try:
            return await self._complete(messages.system, messages.user, who, fmt)
        except LlmError as exc:
            if isinstance(exc, LlmTimeout):
                self._metrics.llm_timeouts.inc()  # its reservation is charged, not given back (`_abandoned`)
            elif reservation_id is not None:
                await self._release_tokens(reservation_id)
            return exc
        except BaseException:  # cancelled (shutdown) or a bug
            if reservation_id is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await self._release_tokens(reservation_id)
            raise

    def _abandoned(self, due: MissionDue, reservation_id: int | None, prompt_chars: int) -> TokenUsage:
        """What a call given up on at MANA_AI_LLM_TIMEOUT_S is charged, with no iteration: its
        estimate (the prompt's ~chars/4, the completion's MANA_AI_LLM_MAX_TOKENS or 1024). The
        server does not stop when the connection closes: llama-cpp-python generates the answer
        to its end, and a paid API bills it."""
        agent = due.agent
        return TokenUsage(reservation_id, due.mission.user_id, agent.id if agent else LEGACY_AI_PRINCIPAL,
                          due.mission.id, None, prompt_chars // _CHARS_PER_TOKEN,
                          self._settings.llm_max_tokens or _COMPLETION_ESTIMATE)

    async def _release_tokens(self, reservation_id: int) -> None:
        """Give a reservation back; best effort: one the database did not take stops counting
        against the budget once it is stale (an hour)."""
        try:
            with trio.fail_after(5):
                await release_tokens(self._pool, reservation_id)
        except _DB_ERRORS_OR_TIMEOUT as exc:
            self._metrics.ledger_write_failures.labels(write="usage").inc()
            log.warning("mission.reservation_not_released", extra={"reservation": reservation_id,
                                                                   "error": str(exc)})

    async def _record_usage(self, due: MissionDue, usage: TokenUsage) -> None:
        """Usage of a run whose plan is not written back; best effort (a stale row is harmless)."""
        try:
            with trio.fail_after(5):
                await record_usage(self._pool, usage)
        except _DB_ERRORS_OR_TIMEOUT as exc:
            self._metrics.ledger_write_failures.labels(write="usage").inc()
            log.warning("mission.usage_not_recorded", extra={**self._context(due), "error": str(exc)})

    async def _forget_research(self, due: MissionDue) -> None:
        """The slot is planned: its settled deep-research job has served. Best effort: a row
        left behind belongs to a planned slot, is never used again and is pruned."""
        try:
            with trio.fail_after(5):
                await forget_settled(self._pool, due.claim)
        except _DB_ERRORS_OR_TIMEOUT as exc:
            log.warning("mission.research_not_forgotten", extra={**self._context(due), "error": str(exc)})

    async def _resolve_inputs(self, due: MissionDue, iteration_id: str) -> Inputs:
        resolved = Inputs((), False)
        if self._inputs is not None:
            resolved = await self._inputs.resolve(due.mission, iteration_id, self._clock())
        mission = due.mission
        deep = due.research.input if due.research is not None else None
        if deep is not None:  # the deep-research answer replaces the shallow step, wrapped alike
            return Inputs((*resolved.inputs, _wrapped(deep)), True)
        if self._research is None or not wants_research(mission.objective, mission.concept_markdown):
            return resolved
        result = await self._research.research(mission.objective)  # never raises: a hint, not a need
        if isinstance(result, ResearchFailed):
            self._metrics.research.labels(outcome=result.reason).inc()
            log.info("mission.research_skipped", extra={**self._context(due), "reason": result.reason})
            return resolved
        self._metrics.research.labels(outcome="ok").inc()
        log.info("mission.pre_research", extra={**self._context(due), "feeds": result.feed_count,
                                                "articles": len(result.articles)})
        found = research_input(mission.objective,
                               research_markdown(mission.objective, result.feed_count, result.articles))
        return Inputs((*resolved.inputs, _wrapped(found)), True)

    def _llm_span_attributes(self) -> Attributes:
        """A chat call's span attributes (gen_ai semantic conventions; no message content)."""
        max_tokens = self._settings.llm_max_tokens
        return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                "gen_ai.request.model": self._settings.llm_model, "gen_ai.request.temperature": 0.3,
                "server.address": safe_url(self._settings.mana_llm_url),
                **({} if max_tokens is None else {"gen_ai.request.max_tokens": max_tokens})}

    async def _complete(self, system: str, user: str, who: SlotKey,
                        fmt: Mapping[str, object] | None = None) -> Completion:
        """The LLM call in a client span with the gen_ai semantic conventions (no message content)."""
        model = self._settings.llm_model
        attributes = {**self._llm_span_attributes(),
                      **({} if fmt is None else {"mana_ai.llm.response_format": self._settings.llm_response_format})}
        with self._tracing.span(f"chat {model}", attributes, client=True) as span:
            try:
                self._admit()
                completion = await self._llm.complete(system, user, who=who, response_format=fmt)
            except LlmError as exc:
                span.fail(str(exc))  # the tracer also records error.type as the span ends
                raise
            if self._circuit is not None:
                self._circuit.succeeded()
            span.set_attributes({"gen_ai.response.model": completion.model,
                                 "gen_ai.usage.input_tokens": completion.prompt_tokens,
                                 "gen_ai.usage.output_tokens": completion.completion_tokens,
                                 "mana_ai.llm.attempts": completion.attempts,
                                 "mana_ai.llm.reasoning_chars": completion.reasoning_chars})
            self._metrics.llm_reasoning_chars.observe(completion.reasoning_chars)
            return completion

    # --- the tool-calling planner (MANA_AI_PLANNER=tools, docs/planner-tools.md) -------------

    async def _plan_with_tools(self, due: MissionDue, tools: tuple[Tool, ...], resolved: Inputs,
                               iteration_id: str) -> MissionOutcome:
        """Rounds of tool calls instead of one JSON answer; the same ledger, write-back and row."""
        mission, agent, settings = due.mission, due.agent, self._settings
        messages = build_tools_prompt(
            PromptMission(mission.title, mission.concept_markdown, mission.objective, mission.iterations),
            resolved.inputs, max_rounds=settings.planner_max_rounds)
        if resolved.wrapped:
            messages = PlannerMessages(messages.system + USER_DATA_NOTICE, messages.user)
        if agent is not None:
            messages = with_agent_context(messages, AgentContext(agent.name, agent.role, agent.system_prompt,
                                                                 agent.memory))
        prompt_chars = len(messages.system) + len(messages.user) + len(json.dumps(tools_to_function_schemas(tools)))
        reservation = await self._reserve(due, prompt_chars)
        if reservation is not None and not reservation.granted:
            return await self._over_budget(due, reservation)
        reservation_id = reservation.id if reservation is not None else None
        try:
            with self._metrics.stage("llm"):
                result = await run_tool_loop(messages.system, messages.user, tools, chat=partial(self._chat_round, who=_slot_key(due)),
                                             budget=self._round_budget(due, reservation, _estimate(prompt_chars)),
                                             max_rounds=settings.planner_max_rounds,
                                             max_steps=settings.planner_max_steps, bounds=self._bounds)
        except BaseException:  # cancelled (shutdown), the database gone mid-loop, or a bug
            if reservation_id is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await self._release_tokens(reservation_id)
            raise
        self._count_loop(due, result)
        plan = result.plan
        usage = TokenUsage(reservation_id, mission.user_id, agent.id if agent else LEGACY_AI_PRINCIPAL, mission.id,
                           None if result.error is not None else iteration_id,
                           result.prompt_tokens, result.completion_tokens)
        self._metrics.tokens_used.labels(agent_id=usage.agent_id).inc(result.tokens)
        if result.error is not None:
            if isinstance(result.error, LlmTimeout):
                self._metrics.llm_timeouts.inc()
                abandoned = self._abandoned(due, reservation_id, prompt_chars)  # the round given up on
                await self._record_usage(due, dataclasses.replace(
                    usage, prompt_tokens=usage.prompt_tokens + abandoned.prompt_tokens,
                    completion_tokens=usage.completion_tokens + abandoned.completion_tokens))
            elif result.tokens > 0:
                await self._record_usage(due, usage)  # earlier rounds spent them all the same
            elif reservation_id is not None:
                await self._release_tokens(reservation_id)
            if isinstance(result.error, LlmClosed):
                return await self._hand_back(due, SKIPPED_SHUTDOWN)
            if self._outage(due, result.error):
                return await self._park(due)
            return await self._fail(due, ERROR, str(result.error),
                                    tokens=(result.prompt_tokens, result.completion_tokens))
        if result.stop_reason == "cut-off":  # a round cut off at the token limit: no plan at all
            await self._record_usage(due, dataclasses.replace(usage, iteration_id=None))  # no iteration
            return await self._parse_failed(due, CUT_OFF_REASON, 0,
                                            tokens=(result.prompt_tokens, result.completion_tokens))
        problem = storage_problem(plan, self._bounds)  # calls were checked; the final summary was not
        if problem is not None:
            await self._record_usage(due, dataclasses.replace(usage, iteration_id=None))  # no iteration
            return await self._parse_failed(due, problem, len(plan.summary),
                                            tokens=(result.prompt_tokens, result.completion_tokens))
        self._metrics.plans_produced.inc()
        provenance = Provenance(_plan_kind(plan), result.model or settings.llm_model,
                                _prompt_hash(messages.system, messages.user), result.prompt_tokens,
                                result.completion_tokens, planner_mode="tools", planner_rounds=result.rounds)
        return await self._write_plan(due, plan, iteration_id, provenance, usage, planner="tools",
                                      rounds=result.rounds, stop=result.stop_reason)

    def _count_loop(self, due: MissionDue, result: LoopResult) -> None:
        """Rounds, calls by outcome, and one log line per rejected call (tool and reason only)."""
        if result.rounds:
            self._metrics.planner_rounds.observe(result.rounds)
        for call in result.calls:
            label = tool_label(call.tool)
            self._metrics.tool_calls.labels(tool=label, outcome=call.outcome).inc()
            if call.outcome == "rejected":
                log.info("mission.tool_call_rejected", extra={**self._context(due), "tool": label,
                                                              "reason": call.reason, "round": call.round_no})
        if result.stop_reason == "budget":
            log.info("mission.planner_stopped", extra={**self._context(due), "reason": "budget",
                                                       "rounds": result.rounds})

    def _round_budget(self, due: MissionDue, reservation: Reservation | None, estimate: int) -> Budget:
        """The budget before each round: the reservation's view first, the ledger's after.

        Until the run settles, the ledger counts this run's reservation at its ``estimate``;
        the loop adds what its rounds really used instead.
        """
        agent = due.agent
        if reservation is None or agent is None or agent.max_tokens_per_day is None:
            return _no_budget
        cap, name = int(agent.max_tokens_per_day), agent.name

        async def view(round_no: int) -> BudgetView | None:
            if round_no == 1:
                return BudgetView(reservation.used_24h, cap, name)
            with trio.fail_after(10):
                usage = await usage_24h(self._pool, due.mission.user_id, agent.id)
            return BudgetView(max(0, usage.used - estimate), cap, name)

        return view

    async def _chat_round(self, messages: Sequence[WireMessage], tools: Sequence[FunctionSchema], *,
                          who: SlotKey) -> AssistantTurn:
        """One round in a client span with the gen_ai semantic conventions (no message content)."""
        model = self._settings.llm_model
        with self._tracing.span(f"chat {model}", self._llm_span_attributes(), client=True) as span:
            try:
                self._admit()
                turn = await self._llm.chat_with_tools(messages, tools, who=who)
            except LlmError as exc:
                span.fail(str(exc))
                raise
            if self._circuit is not None:
                self._circuit.succeeded()
            span.set_attributes({"gen_ai.response.model": turn.model,
                                 "gen_ai.usage.input_tokens": turn.prompt_tokens,
                                 "gen_ai.usage.output_tokens": turn.completion_tokens,
                                 "mana_ai.llm.attempts": turn.attempts,
                                 "mana_ai.llm.tool_calls": len(turn.tool_calls),
                                 "mana_ai.llm.reasoning_chars": turn.reasoning_chars})
            self._metrics.llm_reasoning_chars.observe(turn.reasoning_chars)
            return turn

    async def _reserve(self, due: MissionDue, prompt_chars: int) -> Reservation | None:
        """Reserve an estimate against the rolling 24 h caps that apply: the agent's budget, the
        user's (MANA_AI_USER_MAX_TOKENS_PER_DAY) and the deployment's (MANA_AI_MAX_TOKENS_PER_DAY).
        None when none applies.

        Absent, non-numeric or negative agent budgets are unlimited; without a user or deployment
        cap such runs skip the reservation and record their usage with the write-back instead
        (one transaction less per mission).
        """
        agent, settings = due.agent, self._settings
        budget = None
        if agent is not None and agent.max_tokens_per_day is not None and agent.max_tokens_per_day >= 0:
            budget = int(agent.max_tokens_per_day)
        user_cap, global_cap = settings.user_max_tokens_per_day, settings.max_tokens_per_day
        if budget is None and user_cap is None and global_cap is None:
            return None
        reserve = partial(reserve_tokens, self._pool, user_id=due.mission.user_id,
                          agent_id=agent.id if agent else LEGACY_AI_PRINCIPAL, mission_id=due.mission.id,
                          estimate=_estimate(prompt_chars), budget=budget, user_cap=user_cap, global_cap=global_cap)
        if global_cap is None:
            return await reserve()
        async with self.global_budget.in_order:
            reservation = await reserve()
            if reservation.global_used_24h >= global_cap:
                self.global_budget.refused(reservation.global_used_24h)
            else:
                self.global_budget.granted(reservation.global_used_24h)
        return reservation

    async def _over_budget(self, due: MissionDue, reservation: Reservation) -> MissionOutcome:
        """No LLM call; the slot stays due and runs once usage ages out of the 24 h window.

        The widest cap reached names the decision. A deployment-wide pause is told once (by
        `GlobalBudget`), so its per-mission lines are debug lines.
        """
        settings = self._settings
        cap: float | None
        if reservation.refused_by == GLOBAL_CAP:
            decision, used, cap = SKIPPED_GLOBAL_BUDGET, reservation.global_used_24h, settings.max_tokens_per_day
        elif reservation.refused_by == USER_CAP:
            decision, used, cap = SKIPPED_USER_BUDGET, reservation.user_used_24h, settings.user_max_tokens_per_day
        else:
            decision, used = SKIPPED_BUDGET, reservation.used_24h
            cap = due.agent.max_tokens_per_day if due.agent else None
        self._metrics.agent_decisions.labels(decision=decision).inc()
        log.log(logging.DEBUG if decision == SKIPPED_GLOBAL_BUDGET else logging.INFO, "mission.skipped",
                extra={**self._context(due), "decision": decision, "used_24h": used, "budget": cap})
        return await self._hand_back(due, decision)

    def _admit(self) -> None:
        """Before each LLM request: none while the circuit is open (it may have opened meanwhile)."""
        if self._circuit is not None and not self._circuit.admits():
            raise LlmCircuitOpen()

    def _outage(self, due: MissionDue, error: Exception) -> bool:
        """Tell the circuit how the call failed; True: park the mission (the LLM is down)."""
        return self._circuit is not None and self._circuit.failed(error, due.mission.user_id)

    async def _park(self, due: MissionDue) -> MissionOutcome:
        """The LLM is down: the slot goes back without using an attempt and is dispatched again
        once the circuit closes (the circuit tells the due timer)."""
        assert self._circuit is not None
        self._circuit.parked()
        log.debug("mission.parked", extra={**self._context(due), "decision": SKIPPED_LLM_DOWN})
        released = await self._release(due, SKIPPED_LLM_DOWN)
        if released and self._circuit.admits():
            self.due_again(0.0)  # it closed while this claim went back: the closing cycle may have missed it
        return MissionOutcome(due.mission.id, SKIPPED_LLM_DOWN)

    async def _hand_back(self, due: MissionDue, decision: str) -> MissionOutcome:
        """The slot goes back without using up an attempt (over budget, shutting down)."""
        if decision == SKIPPED_SHUTDOWN:
            log.info("mission.skipped", extra={**self._context(due), "decision": decision})
        await self._release(due, decision)
        return MissionOutcome(due.mission.id, decision)

    async def _fail(self, due: MissionDue, kind: str, error: str, *, completion: Completion | None = None,
                    plan_produced: bool = False, tokens: tuple[int, int] = (0, 0)) -> MissionOutcome:
        """Count, log and record a failed attempt in the ledger (retry with backoff, or dead)."""
        error = self._redact(error)
        if kind == ERROR:
            self._metrics.mission_errors.inc()
        delay = backoff_s(due.claim.attempt, base_s=self._retry.base_s, max_s=self._retry.max_s,
                          jitter=self._jitter())
        result = None
        self._leases.settling(due.claim)
        try:
            with trio.fail_after(10):
                result = await fail_run(self._pool, due.claim, outcome=kind, error=error,
                                        max_attempts=self._settings.max_attempts, backoff_s=delay)
        except _DB_ERRORS_OR_TIMEOUT as exc:
            # the lease expires on its own and the slot is retried then
            self._metrics.ledger_write_failures.labels(write="fail").inc()
            log.error("mission.ledger_write_failed", extra={**self._context(due), "error": str(exc)})
        status = result.status if result else "unknown"
        if status == "retry":
            self.due_again(delay)
        log.warning("mission.failed", extra={**self._context(due), "outcome": kind, "error": error,
                                             "attempt": due.claim.attempt, "ledger": status})
        return MissionOutcome(due.mission.id, kind, error=error, plan_produced=plan_produced,
                              prompt_tokens=completion.prompt_tokens if completion else tokens[0],
                              completion_tokens=completion.completion_tokens if completion else tokens[1])

    def _lease_lost(self, due: MissionDue, *, queued: bool = False) -> MissionOutcome:
        self._metrics.mission_errors.inc()
        log.warning("mission.lease_lost", extra={**self._context(due), "queued": queued})
        return MissionOutcome(due.mission.id, ERROR, error="lease lost to another instance; nothing written")

    @staticmethod
    def _context(due: MissionDue) -> dict[str, object]:
        """The stable keys of every mission log line (ids and the run's duration so far)."""
        agent: Agent | None = due.agent
        return {"mission": due.mission.id, "user": due.mission.user_id,
                "agent": agent.id if agent else "legacy", "slot": due.claim.due_slot,
                "duration_ms": round((time.perf_counter() - _RUN_STARTED.get(time.perf_counter())) * 1000, 1)}


def _slot_key(due: MissionDue) -> SlotKey:
    """Where the mission's LLM requests wait for a slot: its user, its agent, its due slot."""
    return SlotKey(due.mission.user_id, due.agent.id if due.agent is not None else "", due.claim.due_slot)


def _unscheduled(delay_s: float) -> None:
    """No due timer to tell (no scheduler, tests)."""


def _wrapped(found: ResolvedInput) -> ResolvedInput:
    """Web content is as untrusted as decrypted user content: the same wrapping, last in the list."""
    return dataclasses.replace(found, content=f"{USER_DATA_OPEN}\n{found.content}\n{USER_DATA_CLOSE}")


def _estimate(prompt_chars: int) -> int:
    return prompt_chars // _CHARS_PER_TOKEN + _COMPLETION_ESTIMATE


async def _no_budget(round_no: int) -> BudgetView | None:
    return None


def _plan_kind(plan: Plan) -> str:
    return PLANNED if plan.steps else EMPTY_PLAN


def _prompt_hash(system: str, user: str) -> str:
    return hashlib.sha256(f"{system}\x00{user}".encode()).hexdigest()
