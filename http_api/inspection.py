"""`/internal/agents…`, `/internal/missions/{userId}` and `/internal/rejected`: what every agent actor
is doing, and why; which `sync_changes` rows the refresh skipped.

Behind the service-key gate of `http_api/app.py`. Response shapes: docs/inspection.md.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import asyncpg
import trio
from quart import jsonify, request
from quart_trio import QuartTrio

from actors.agent import AgentStats
from actors.explain import CapsUse, budgeted_agents, explain_missions
from actors.registry import AgentRegistry
from http_api.audit import parse_limit
from planner import AI_AVAILABLE_TOOLS, PolicyError, filter_tools_by_agent_policy, iso_ms
from settings import Settings
from store.inspect import RejectedRow, agent_snapshot, dead_slots, rejected_rows, user_missions
from store.records import Agent
from store.research_jobs import ResearchJobRow, jobs_of_user
from store.usage import caps_usage_24h, usage_24h


def register_inspection(app: QuartTrio, pool: asyncpg.Pool, registry: AgentRegistry, settings: Settings) -> None:
    @app.get("/internal/agents")
    async def list_agents() -> Any:
        return jsonify({"agents": [_actor_summary(s) for s in registry.actor_stats()]})

    @app.get("/internal/agents/<user_id>/<agent_id>")
    async def show_agent(user_id: str, agent_id: str) -> Any:
        snapshot = await agent_snapshot(pool, user_id, agent_id)
        stats = registry.stats_of((user_id, agent_id))
        if snapshot is None and stats is None:
            return jsonify({"error": "unknown agent"}), 404
        agent = None if snapshot is None else Agent.from_record(user_id, snapshot[0])
        usage = await usage_24h(pool, user_id, agent_id)
        budget = agent.max_tokens_per_day if agent is not None else None
        dead = await dead_slots(pool, user_id, agent_id)
        return jsonify({
            "userId": user_id,
            "agentId": agent_id,
            "agent": None if agent is None else _agent_json(agent, deleted=bool(snapshot and snapshot[1])),
            "actor": None if stats is None else _actor_json(stats),
            "recentOutcomes": [] if stats is None else [
                {"missionId": o.mission_id, "outcome": o.kind, "error": o.error, "at": _unix_iso(o.at)}
                for o in stats.recent],
            "tokens24h": {"used": usage.used, "settled": usage.settled, "reservations": usage.reservations,
                          "budget": budget,
                          "remaining": None if budget is None or budget < 0 else max(0, int(budget) - usage.used)},
            "deadSlots": [{"missionId": d["mission_id"], "dueSlot": d["due_slot"], "attempts": d["attempts"],
                           "lastError": d["last_error"],
                           "at": iso_ms(d["finished_at"]) if d["finished_at"] else None} for d in dead],
        })

    @app.get("/internal/missions/<user_id>")
    async def list_missions(user_id: str) -> Any:
        found = await user_missions(pool, user_id)
        if not found.missions or found.db_now is None:
            return jsonify({"error": "unknown user"}), 404
        deep_research = settings.mana_research_url is not None and settings.research_service_key is not None
        jobs = await jobs_of_user(pool, user_id) if deep_research else {}
        used = {agent_id: (await usage_24h(pool, user_id, agent_id)).used for agent_id in budgeted_agents(found)}
        caps = await read_caps(pool, settings, user_id)
        missions = []
        for v in explain_missions(user_id, found, registry.actor_stats(), used, jobs, caps):
            m, verdict = v.mission, v.verdict
            missions.append({
                "missionId": m.mission_id,
                "title": m.record.get("title"),
                "state": m.record.get("state"),
                "nextRunAt": m.record.get("nextRunAt"),
                "agentId": v.agent_id,
                "due": verdict.due,
                "reason": verdict.reason,
                "detail": verdict.detail,
                "run": None if m.run is None else {
                    "dueSlot": m.run.due_slot, "status": m.run.status, "attempts": m.run.attempts,
                    "nextAttemptAt": iso_ms(m.run.next_attempt_at) if m.run.next_attempt_at else None,
                    "leaseOwner": m.run.lease_owner,
                    "leaseExpiresAt": iso_ms(m.run.lease_expires_at) if m.run.lease_expires_at else None,
                    "lastError": m.run.last_error, "iterationId": m.run.iteration_id},
                "research": _research_json(jobs.get(m.mission_id)),
            })
        return jsonify({"userId": user_id, "checkedAt": iso_ms(found.db_now), "instance": settings.instance_id,
                        "missions": missions})

    @app.get("/internal/rejected")
    async def list_rejected() -> Any:
        user_id = request.args.get("userId") or None
        rows = await rejected_rows(pool, user_id, parse_limit(request.args.get("limit")))
        return jsonify({"rows": [_rejected_json(r) for r in rows]})


async def read_caps(pool: asyncpg.Pool, settings: Settings, user_id: str) -> CapsUse:
    """The user's and the deployment's caps with their 24 h use (one query; none without caps)."""
    user_cap, global_cap = settings.user_max_tokens_per_day, settings.max_tokens_per_day
    user_used, global_used = await caps_usage_24h(pool, user_id, user=user_cap is not None,
                                                  deployment=global_cap is not None)
    return CapsUse(user_cap, user_used, global_cap, global_used)


def _actor_summary(stats: AgentStats) -> dict[str, Any]:
    agent = stats.agent
    return {"userId": stats.key[0], "agentId": stats.key[1], "legacy": stats.key[1] is None,
            "name": agent.name if agent else None, "state": agent.state if agent else None,
            "concurrencyLimit": stats.limit, "inFlight": len(stats.in_flight), "mailboxDepth": stats.queued}


def _actor_json(stats: AgentStats) -> dict[str, Any]:
    now = trio.current_time()
    return {"concurrencyLimit": stats.limit, "mailboxDepth": stats.queued, "waiting": list(stats.waiting),
            "inFlight": [{"missionId": f.mission_id, "elapsedSeconds": round(now - f.started_at, 3)}
                         for f in stats.in_flight]}


def _agent_json(agent: Agent, *, deleted: bool) -> dict[str, Any]:
    limit = agent.max_concurrent_missions
    return {"name": agent.name, "role": agent.role, "state": agent.state, "deleted": deleted or bool(agent.deleted_at),
            "maxConcurrentMissions": limit if math.isfinite(limit) else None,  # NaN, Infinity are not JSON
            "maxTokensPerDay": agent.max_tokens_per_day, "policy": _policy_summary(agent)}


def _policy_summary(agent: Agent) -> dict[str, Any] | None:
    if agent.policy is None:
        return None
    try:
        offered = filter_tools_by_agent_policy(AI_AVAILABLE_TOOLS, agent.policy)
    except PolicyError as exc:
        return {"valid": False, "error": str(exc)}
    names = {t.name for t in offered}
    return {"valid": True, "defaultForAi": agent.policy.get("defaultForAi"),
            "offeredTools": sorted(names), "deniedTools": sorted(t.name for t in AI_AVAILABLE_TOOLS if t.name not in names)}


def _rejected_json(row: RejectedRow) -> dict[str, Any]:
    return {"changeId": str(row.change_id), "table": row.table_name, "userId": row.user_id, "recordId": row.record_id,
            "reason": row.reason, "detail": row.detail, "rowBytes": row.row_bytes,
            "changedAt": iso_ms(row.changed_at), "rejectedAt": iso_ms(row.rejected_at)}


def _research_json(job: ResearchJobRow | None) -> dict[str, Any] | None:
    """A deep-research job's state and timing (never its answer)."""
    if job is None:
        return None
    return {"status": job.status, "taskId": job.task_id, "providerId": job.provider_id, "dueSlot": job.due_slot,
            "submittedAt": iso_ms(job.submitted_at), "ageSeconds": round(job.age_s),
            "lastPolledAt": iso_ms(job.last_polled_at) if job.last_polled_at else None,
            "settledAt": iso_ms(job.settled_at) if job.settled_at else None,
            "pendingSkips": job.pending_skips, "lastError": job.last_error}


def _unix_iso(at: float) -> str:
    return iso_ms(datetime.fromtimestamp(at, timezone.utc))
