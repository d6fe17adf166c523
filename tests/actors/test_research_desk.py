"""Deep-research jobs end to end: the real runtime on Postgres, a stand-in mana-research on loopback.

A mission asking for deep research is parked (no slot, no decryption, no LLM call) until its job
completes, then planned with the answer inside `<user_data>`; a failed, too old or unreachable
job falls back to the shallow research.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from quart import jsonify, request
from quart_trio import QuartTrio

from daemon import SERVICE_KEY, running_daemon
from fake_llm import Reply, plan_reply, running_fake_llm
from grants.cipher import encrypt_value
from grants.derive import Derivation, derive_mdk, mint_grant
from loopback import serving
from observability.logs import JsonFormatter
from observability.metrics import Metrics
from planner.inputs import USER_DATA_NOTICE
from planning import CREATE_TASK, agent_row, ledger, planning_runtime, written_rows
from seed import change, fetch, insert_rows, mission

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)
KEY = "mana-research-SECRET-4e1f"
MASTER = bytes(range(1, 33))
DERIVATION = Derivation("m1", ("notes",), ("notes:n1",))
PATH = "/api/v1/internal/research/async"
ANSWER = {"answer": "Trio setzt auf strukturierte Nebenlaeufigkeit.",
          "citations": [{"url": "https://trio.example/docs", "title": "Trio Docs", "snippet": "Structured concurrency"},
                        {"title": "ohne URL"}, {"url": "https://blog.example/x"}]}


@dataclass
class StandIn:
    """mana-research as far as mana-ai sees it; tests move jobs along by editing `jobs`."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    submits: list[tuple[dict[str, str | None], Any]] = field(default_factory=list)
    polls: list[tuple[dict[str, str | None], str]] = field(default_factory=list)
    submit_status: int = 200
    submit_gate: trio.Event | None = None  # a submit answers only once this is set
    submitted: trio.Event = field(default_factory=trio.Event)  # set by the first submit

    def only_job(self) -> dict[str, Any]:
        [job] = self.jobs.values()
        return job


def _headers() -> dict[str, str | None]:
    return {name: request.headers.get(name) for name in ("X-Service-Key", "X-User-Id", "X-App-Id", "Content-Type")}


def research_app(stand_in: StandIn) -> QuartTrio:
    app = QuartTrio("fake-mana-research")

    @app.post(PATH)
    async def submit() -> Any:
        stand_in.submits.append((_headers(), await request.get_json()))
        stand_in.submitted.set()
        if stand_in.submit_gate is not None:
            await stand_in.submit_gate.wait()
        if stand_in.submit_status != 200:
            return jsonify({"error": "provider key missing"}), stand_in.submit_status
        task_id = f"job {len(stand_in.submits)}/a"  # a space and a slash: the poll URL-encodes it
        stand_in.jobs[task_id] = {"taskId": task_id, "status": "queued", "providerId": "gemini-deep-research-max"}
        return jsonify({"taskId": task_id, "status": "queued", "providerId": "gemini-deep-research-max",
                        "costCredits": 1500})

    @app.get(f"{PATH}/<path:task_id>")
    async def poll(task_id: str) -> Any:
        stand_in.polls.append((_headers(), task_id))
        job = stand_in.jobs.get(task_id)
        return (jsonify(job), 200) if job is not None else (jsonify({"error": "not found"}), 404)

    return app


@pytest.fixture(scope="module")
def rsa_key() -> Iterator[rsa.RSAPrivateKey]:
    yield rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _grant(key: rsa.RSAPrivateKey) -> Any:
    now = datetime.now(timezone.utc)
    return mint_grant(key.public_key(), MASTER, DERIVATION, issued_at=now, expires_at=now + timedelta(days=7))


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"service": "mana-ai", **labels}) or 0.0


def deep(**overrides: Any) -> dict[str, Any]:
    return {"research_service_key": KEY, "deep_research": True, "deep_research_poll_s": 0.0, **overrides}


async def jobs(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await fetch(pool, "SELECT * FROM mana_ai.mission_research_jobs ORDER BY mission_id")


def prompts(llm: Any) -> list[tuple[str, str]]:
    return [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in llm.requests]


async def test_a_job_parks_its_mission_without_a_slot_then_its_answer_is_planned(
        pool: asyncpg.Pool, rsa_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture) -> None:
    objective = "Deep Dive: Trio oder asyncio?"
    mdk = derive_mdk(MASTER, DERIVATION)
    note = {"id": "n1", "title": encrypt_value(mdk, "Notiz", os.urandom(12)),
            "content": encrypt_value(mdk, "geheim", os.urandom(12))}
    await insert_rows(pool, {**change("notes", "n1", "insert", note), "app_id": "notes", "created_at": PAST},
                      {**agent_row("a1", limit=1), "created_at": PAST},
                      {**mission("m1", objective=objective, agent_id="a1", grant=_grant(rsa_key)), "created_at": PAST},
                      {**mission("m2", objective="Aufräumen", agent_id="a1"), "created_at": PAST})
    # m1's submit answers only once m2 (same agent, one slot) reached the LLM: m1 holds no slot
    stand_in, metrics = StandIn(submit_gate=trio.Event()), Metrics()
    caplog.set_level(logging.DEBUG)
    async with serving(research_app(stand_in)) as url, running_fake_llm() as llm:
        def respond(body: dict[str, Any]) -> Reply:
            assert stand_in.submit_gate is not None
            stand_in.submit_gate.set()
            return plan_reply([CREATE_TASK])

        llm.responder = respond
        async with planning_runtime(pool, llm, metrics, mana_research_url=url, private_key_pem=_pem(rsa_key),
                                    **deep()) as runtime:
            with trio.fail_after(30):
                first = await runtime.snapshots.run_cycle()
            # m1 is parked; m2, of the same one-slot agent, is planned in the same cycle
            assert (first.due_mission_count, first.plans_written_back, first.errors) == (2, 1, [])
            assert [u for _, u in prompts(llm) if objective in u] == []
            [(headers, body)] = stand_in.submits
            assert headers == {"X-Service-Key": KEY, "X-User-Id": "u-1", "X-App-Id": "mana-ai",
                               "Content-Type": "application/json"}
            assert body == {"query": objective, "provider": "gemini-deep-research-max"}
            [run] = await ledger(pool, "m1")
            assert (run["status"], run["attempts"], run["outcome"]) == ("retry", 0, "skipped-research-pending")
            assert await fetch(pool, "SELECT * FROM mana_ai.decrypt_audit") == []  # nothing was decrypted
            [job] = await jobs(pool)
            assert (job["status"], job["task_id"], job["pending_skips"], job["due_slot"]) == (
                "pending", "job 1/a", 1, "2026-04-15T09:00:00.000Z")

            second = await runtime.snapshots.run_cycle()  # still running: parked again
            stand_in.only_job()["status"] = "running"
            third = await runtime.snapshots.run_cycle()
            assert (second.due_mission_count, second.plans_written_back) == (1, 0)
            assert (third.due_mission_count, third.plans_written_back) == (1, 0)
            assert [task for _, task in stand_in.polls] == ["job 1/a", "job 1/a"]
            assert stand_in.polls[0][0] == {"X-Service-Key": KEY, "X-User-Id": "u-1", "X-App-Id": "mana-ai",
                                            "Content-Type": None}
            assert len(llm.requests) == 1

            stand_in.only_job().update(status="completed", result={"answer": ANSWER})
            fourth = await runtime.snapshots.run_cycle()
    assert (fourth.due_mission_count, fourth.plans_written_back, fourth.errors) == (1, 1, [])
    system, user = next(p for p in prompts(llm) if objective in p[1])
    assert system.endswith(USER_DATA_NOTICE)
    assert ('### news-research/web: Deep Research: "Deep Dive: Trio oder asyncio?"\n<user_data>\n'
            '# Deep Research: "Deep Dive: Trio oder asyncio?"\n\n'
            'Trio setzt auf strukturierte Nebenlaeufigkeit.\n\n## Quellen\n\n'
            '- [Trio Docs](https://trio.example/docs) — Structured concurrency\n'
            '- [https://blog.example/x](https://blog.example/x)\n\n---\n'
            'Nutze diese Quellen fuer deinen Plan. Verwende nur URLs die oben stehen; erfinde keine.\n'
            '</user_data>') in user
    assert len(await written_rows(pool, "m1")) == 1
    assert await jobs(pool) == []  # the slot is planned: its job has served
    audit = await fetch(pool, "SELECT record_id, status FROM mana_ai.decrypt_audit")
    assert [tuple(a) for a in audit] == [("n1", "ok")]  # decrypted once: when it was planned
    provider = {"provider": "gemini-deep-research-max"}
    assert sample(metrics, "mana_ai_research_jobs_submitted_total", **provider) == 1
    assert sample(metrics, "mana_ai_research_jobs_completed_total", **provider) == 1
    assert sample(metrics, "mana_ai_research_jobs_failed_total", **provider) == 0
    assert sample(metrics, "mana_ai_research_jobs_pending_skips_total") == 3
    assert sample(metrics, "mana_ai_agent_decisions_total", decision="skipped-research-pending") == 3
    rendered = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "research_job.submitted" in rendered and "skipped-research-pending" in rendered
    assert KEY not in rendered


def fake_mana_api(seen: list[str]) -> QuartTrio:
    """mana-api's news research, for the shallow fallback (as in test_research_step.py)."""
    app = QuartTrio("fake-mana-api")

    @app.post("/api/v1/news-research/discover")
    async def discover() -> Any:
        seen.append("discover")
        return jsonify({"feeds": [{"url": "https://feeds.example/rss"}]})

    @app.post("/api/v1/news-research/search")
    async def search() -> Any:
        seen.append("search")
        return jsonify({"articles": [{"url": "https://news.example/a", "title": "Neues"}]})

    return app


async def test_a_failed_job_falls_back_to_the_shallow_research(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", objective="Deep research: aktuelle News zu Trio"), "created_at": PAST})
    stand_in, metrics, seen = StandIn(), Metrics(), list[str]()
    async with serving(research_app(stand_in)) as url, serving(fake_mana_api(seen)) as api, \
            running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, metrics, mana_research_url=url, mana_api_url=api,
                                    research_token="t", **deep()) as runtime:
            first = await runtime.snapshots.run_cycle()
            stand_in.only_job().update(status="failed", error="quota exceeded")
            second = await runtime.snapshots.run_cycle()
    assert (first.plans_written_back, second.plans_written_back) == (0, 1)
    [(_, user)] = prompts(llm)
    assert "Web-Research" in user and "Deep Research" not in user
    assert seen == ["discover", "search"]
    assert sample(metrics, "mana_ai_research_jobs_failed_total", provider="gemini-deep-research-max") == 1
    assert await jobs(pool) == []


async def test_a_job_older_than_the_limit_falls_back_without_another_poll(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", objective="Hintergrundrecherche zu Trio"), "created_at": PAST})
    stand_in, metrics = StandIn(), Metrics()
    async with serving(research_app(stand_in)) as url, running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, metrics, mana_research_url=url,
                                    **deep(deep_research_max_age_min=120)) as runtime:
            await runtime.snapshots.run_cycle()
            await fetch(pool, "UPDATE mana_ai.mission_research_jobs SET submitted_at = now() - interval '121 minutes'")
            stats = await runtime.snapshots.run_cycle()
    assert stats.plans_written_back == 1
    assert stand_in.polls == []  # never polled again once too old
    assert sample(metrics, "mana_ai_research_jobs_failed_total", provider="gemini-deep-research-max") == 1
    assert "Deep Research" not in prompts(llm)[0][1]


async def test_with_mana_research_down_missions_are_still_planned(pool: asyncpg.Pool) -> None:
    # a submit that cannot reach mana-research plans at once, with the shallow research
    await insert_rows(pool, {**mission("m1", objective="Tiefe Recherche: Trio"), "created_at": PAST})
    metrics = Metrics()
    async with serving(research_app(StandIn())) as gone:
        pass  # served and stopped: nothing listens there now
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, metrics, mana_research_url=gone, **deep()) as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert (stats.plans_written_back, stats.errors) == (1, [])
    assert sample(metrics, "mana_ai_research_job_errors_total", reason="submit-unreachable") == 1
    assert await jobs(pool) == []


async def test_a_job_that_cannot_be_polled_falls_back_once_too_old(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", objective="Umfassende Recherche: Trio"), "created_at": PAST})
    stand_in, metrics = StandIn(), Metrics()
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with serving(research_app(stand_in)) as url:
            async with planning_runtime(pool, llm, metrics, mana_research_url=url, **deep()) as runtime:
                assert (await runtime.snapshots.run_cycle()).plans_written_back == 0  # submitted, parked
        # mana-research goes away while the job runs: polls fail, the mission stays parked
        async with planning_runtime(pool, llm, metrics, mana_research_url=url, **deep()) as runtime:
            for _ in range(2):
                assert (await runtime.snapshots.run_cycle()).plans_written_back == 0
            [job] = await jobs(pool)
            assert (job["status"], job["pending_skips"], job["last_error"]) == ("pending", 3, "poll-unreachable")
            await fetch(pool, "UPDATE mana_ai.mission_research_jobs SET submitted_at = now() - interval '3 hours'")
            stats = await runtime.snapshots.run_cycle()
    assert (stats.plans_written_back, stats.errors) == (1, [])
    assert sample(metrics, "mana_ai_research_job_errors_total", reason="poll-unreachable") == 2
    assert sample(metrics, "mana_ai_research_jobs_failed_total", provider="gemini-deep-research-max") == 1
    [run] = await ledger(pool, "m1")
    assert run["status"] == "planned"


async def test_submitting_off_still_polls_a_pending_job(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", objective="Deep research Trio"), "created_at": PAST},
                      {**mission("m2", objective="Deep research asyncio"), "created_at": PAST})
    stand_in = StandIn()
    stand_in.jobs["t-9"] = {"taskId": "t-9", "status": "completed", "providerId": "gemini-deep-research-max",
                            "result": {"answer": ANSWER}}
    await fetch(pool, "INSERT INTO mana_ai.mission_research_jobs (user_id, mission_id, task_id, provider_id, due_slot)"
                      " VALUES ('u-1', 'm1', 't-9', 'gemini-deep-research-max', 'older-slot')")
    async with serving(research_app(stand_in)) as url, running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, None, mana_research_url=url, **deep(deep_research=False)) as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.plans_written_back == 2 and stand_in.submits == []
    by_mission = {("Trio" in u): u for _, u in prompts(llm)}
    assert "Deep Research" in by_mission[True] and "Deep Research" not in by_mission[False]


async def test_inspection_shows_a_parked_mission_as_research_pending(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", objective="Deep dive Trio"), "created_at": PAST})
    stand_in = StandIn()
    async with serving(research_app(stand_in)) as url, running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with running_daemon(pool, mana_llm_url=llm.url, mana_research_url=url,
                                  **deep(deep_research_poll_s=600.0)) as daemon:
            tick = await daemon.client.post("/internal/tick", headers={"X-Service-Key": SERVICE_KEY})
            assert tick.json()["dueMissionCount"] == 1 and tick.json()["plansWrittenBack"] == 0
            body = (await daemon.client.get("/internal/missions/u-1", headers={"X-Service-Key": SERVICE_KEY})).json()
    [m1] = body["missions"]
    assert (m1["due"], m1["reason"]) == (False, "research-pending")
    assert m1["detail"].startswith("deep-research task job 1/a submitted 0 min ago, parked 1 times; polled again at ")
    assert m1["research"]["status"] == "pending" and m1["research"]["taskId"] == "job 1/a"
    assert m1["research"]["pendingSkips"] == 1 and m1["research"]["lastError"] is None
    assert "Trio" not in str(m1["research"])


async def test_shutdown_hands_back_a_mission_whose_job_is_being_submitted(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", objective="Deep dive Trio"), "created_at": PAST})
    stand_in = StandIn(submit_gate=trio.Event())  # the submit never answers
    cycles = []
    async with serving(research_app(stand_in)) as url, running_fake_llm() as llm:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                async with planning_runtime(pool, llm, None, mana_research_url=url, grace_s=0.2, **deep()) as runtime:
                    async def cycle() -> None:
                        cycles.append(await runtime.snapshots.run_cycle())

                    nursery.start_soon(cycle)
                    await stand_in.submitted.wait()
                # leaving the runtime stops the desk: after the grace the submit is cancelled
    assert (cycles[0].due_mission_count, cycles[0].plans_written_back) == (1, 0)
    [run] = await ledger(pool, "m1")
    assert (run["status"], run["attempts"], run["outcome"]) == ("retry", 0, "skipped-shutdown")
    assert await jobs(pool) == [] and llm.requests == []


async def test_a_mission_parked_after_the_cycle_computed_its_wake_up_is_polled_at_its_own_time(
        pool: asyncpg.Pool) -> None:
    """The job's submit answers only once the cycle has computed its due timer, so the mission is
    parked after it (due again after the 1 s poll interval). Before, the timer did not know and
    the poll waited for the 60 s interval; now the park tells it."""
    await insert_rows(pool, {**mission("m1", objective="Deep Dive: Trio oder asyncio?"), "created_at": PAST})
    stand_in, metrics = StandIn(submit_gate=trio.Event()), Metrics()
    async with serving(research_app(stand_in)) as url, running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, metrics, mana_research_url=url, tick_enabled=True,
                                    tick_interval_ms=60_000, **deep(deep_research_poll_s=1.0)) as runtime:
            async with trio.open_nursery() as nursery:
                await nursery.start(runtime.snapshots.run)
                with trio.fail_after(10):  # the first cycle's wake-up query (housekeeping) is done
                    while not sample(metrics, "mana_ai_stage_duration_seconds_count", stage="housekeeping"):
                        await trio.sleep(0.01)
                assert stand_in.submit_gate is not None
                stand_in.submit_gate.set()
                with trio.fail_after(10):
                    while not stand_in.polls:
                        await trio.sleep(0.02)
                nursery.cancel_scope.cancel()
    [run] = await ledger(pool, "m1")
    assert run["outcome"] == "skipped-research-pending" and len(stand_in.submits) == 1
    assert sample(metrics, "mana_ai_cycles_total", reason="due-timer") >= 1
    assert sample(metrics, "mana_ai_cycles_total", reason="interval") == 1
