"""The HTTP front against a real daemon on loopback and a real Postgres."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import trio

from daemon import SERVICE_KEY, running_daemon
from conftest import PgServer
from fake_llm import Reply, plan_reply, running_fake_llm
from seed import fetch, insert_rows, mission

KEY = {"X-Service-Key": SERVICE_KEY}
PAST = datetime.now(timezone.utc) - timedelta(minutes=5)


async def test_health_has_reference_shape_and_readiness(pool: asyncpg.Pool) -> None:
    async with running_daemon(pool) as d:
        response = await d.client.get("/health")
        assert response.status_code == 200
        body = response.json()
        assert list(body)[:4] == ["ok", "service", "version", "tick"]
        assert body["ok"] is True and body["service"] == "mana-ai"
        assert body["tick"] == {"enabled": False, "running": False}
        assert body["checks"]["database"] is True and body["checks"]["snapshotActor"] is True
        # the generation of mana-sync's table found at start (the test template is v0.6)
        assert body["syncChanges"] == {"generation": "v0.6", "stampsColumn": "field_timestamps", "origin": False,
                                       "spaceId": False}


async def test_tick_returns_tick_stats_and_counts_due_missions(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1"), "created_at": PAST},
                      {**mission("m2", next_run_at="2999-01-01T00:00:00.000Z"), "created_at": PAST},
                      {**mission("m3", state="paused"), "created_at": PAST})
    async with running_fake_llm(plan_reply([])) as llm, running_daemon(pool, mana_llm_url=llm.url) as d:
        response = await d.client.post("/internal/tick", headers=KEY)
        assert response.status_code == 200
        stats = response.json()
        assert list(stats) == ["scannedAt", "dueMissionCount", "plansProduced", "plansWrittenBack",
                               "parseFailures", "errors"]
        assert stats["dueMissionCount"] == 1 and stats["errors"] == []
        assert stats["plansProduced"] == 1 and stats["plansWrittenBack"] == 1
        assert stats["scannedAt"].endswith("Z") and len(stats["scannedAt"]) == 24
        assert d.metric("mana_ai_ticks_total") == 1
        assert d.metric("mana_ai_snapshots_new_total") == 3
        assert d.metric("mana_ai_snapshot_rows_applied_total") == 3
        # the next cycle folds our own write-back row, and nothing else
        await d.client.post("/internal/tick", headers=KEY)
        assert d.metric("mana_ai_snapshot_rows_applied_total") == 4
        # nothing new: the cycle after reads no history
        await d.client.post("/internal/tick", headers=KEY)
        assert d.metric("mana_ai_snapshot_rows_applied_total") == 4
        assert d.metric("mana_ai_refresh_rows_read_total", table="aiMissions") == 4


async def test_concurrent_ticks_join_one_cycle(pool: asyncpg.Pool) -> None:
    async with running_daemon(pool) as d:
        results: list[dict[str, object]] = []

        async def tick() -> None:
            results.append((await d.client.post("/internal/tick", headers=KEY)).json())

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(tick)
        assert len(results) == 5
        assert d.metric("mana_ai_ticks_total") <= 2  # joined the running or the pending cycle


async def test_internal_routes_need_the_service_key(pool: asyncpg.Pool) -> None:
    async with running_daemon(pool) as d:
        for method, path, headers in [("POST", "/internal/tick", {}),
                                      ("POST", "/internal/tick", {"X-Service-Key": "wrong"}),
                                      ("GET", "/internal/anything", {}),
                                      ("DELETE", "/internal/agents/u/a", {"X-Service-Key": ""})]:
            response = await d.client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path)
            assert response.json() == {"error": "invalid or missing service key"}
        assert d.metric("mana_ai_http_requests_total", method="POST", path="/internal/*", status="401") == 2


async def test_unknown_routes_are_json_404(pool: asyncpg.Pool) -> None:
    async with running_daemon(pool) as d:
        response = await d.client.get("/nope")
        assert response.status_code == 404 and response.json() == {"error": "not found"}
        # the TypeScript service answers GET /internal/tick (valid key) with 404
        response = await d.client.get("/internal/tick", headers=KEY)
        assert response.status_code == 404
        assert d.metric("mana_ai_http_requests_total", method="GET", path="*", status="404") == 2


async def test_metrics_exposes_every_reference_family(pool: asyncpg.Pool) -> None:
    async with running_daemon(pool) as d:
        await d.client.get("/health")
        response = await d.client.get("/metrics")
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = response.text
        expected = {
            "mana_ai_http_requests_total": "counter", "mana_ai_http_request_duration_seconds": "histogram",
            "mana_ai_ticks_total": "counter", "mana_ai_tick_duration_seconds": "histogram",
            "mana_ai_plans_produced_total": "counter", "mana_ai_plans_written_back_total": "counter",
            "mana_ai_parse_failures_total": "counter", "mana_ai_mission_errors_total": "counter",
            "mana_ai_planner_request_duration_seconds": "histogram", "mana_ai_snapshots_new_total": "counter",
            "mana_ai_snapshots_updated_total": "counter", "mana_ai_snapshot_rows_applied_total": "counter",
            "mana_ai_decrypts_total": "counter", "mana_ai_grant_scope_violations_total": "counter",
            "mana_ai_grant_skips_total": "counter", "mana_ai_agent_decisions_total": "counter",
        }
        for name, kind in expected.items():
            assert f"# TYPE {name} {kind}" in text, name
        assert 'mana_ai_http_requests_total{method="GET",path="/health",service="mana-ai",status="200"} 1.0' in text
        assert 'le="0.005"' in text and 'le="120.0"' in text and 'le="60.0"' in text
        assert 'mana_ai_agent_decisions_total{decision="skipped-concurrency",service="mana-ai"} 0.0' in text
        assert "_created" not in text
        openmetrics = await d.client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")


async def test_health_recovers_after_connections_are_killed(pool: asyncpg.Pool) -> None:
    async with running_daemon(pool) as d:
        await fetch(pool, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        statuses = [(await d.client.get("/health")).status_code for _ in range(3)]
        assert statuses[-1] == 200  # the pool replaced the dead connections


async def test_health_turns_not_ok_when_the_database_is_gone(pool: asyncpg.Pool, pg: PgServer,
                                                             db_dsn: str) -> None:
    async with running_daemon(pool) as d:
        assert (await d.client.get("/health")).status_code == 200
        await trio.to_thread.run_sync(pg.sql, f"DROP DATABASE {urlsplit(db_dsn).path[1:]} WITH (FORCE)")
        response = await d.client.get("/health")
        assert response.status_code == 503
        body = response.json()
        assert body["ok"] is False and body["checks"]["database"] is False
        # a tick still answers, with the failure in `errors`
        stats = (await d.client.post("/internal/tick", headers=KEY)).json()
        assert stats["dueMissionCount"] == 0 and len(stats["errors"]) >= 1


async def test_a_tick_longer_than_the_keep_alive_timeout_still_answers(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1"), "created_at": PAST})
    slow = Reply(body=plan_reply([]).body, delay_s=6)  # hypercorn's keep_alive_timeout is 5 s
    async with running_fake_llm(slow) as llm, running_daemon(pool, mana_llm_url=llm.url) as d:
        response = await d.client.post("/internal/tick", headers=KEY, timeout=30)
    assert response.status_code == 200 and response.json()["plansWrittenBack"] == 1


async def test_route_parameters_with_control_bytes_or_bad_utf8_are_a_400(pool: asyncpg.Pool,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    async with running_daemon(pool) as d:
        for path in ("/internal/missions/%00", "/internal/missions/u%0A1", "/internal/agents/u-1/a%00",
                     "/internal/missions/%FF%FE", "/internal/rejected?userId=%00", "/internal/rejected?limit=%1B"):
            response = await d.client.get(path, headers=KEY)
            assert response.status_code == 400, (path, response.text)
            assert response.json() == {"error": "invalid characters in the request"}, path
        # UTF-8 is fine: an unknown user, not a bad request
        assert (await d.client.get("/internal/missions/u-%C3%A4", headers=KEY)).status_code in (200, 404)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert "\x00" not in caplog.text


async def test_health_shows_the_llm_at_once_without_making_the_daemon_unready(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", agent_id=None), "created_at": PAST})
    async with running_fake_llm(Reply(status=503, body="overloaded")) as llm, \
            running_daemon(pool, mana_llm_url=llm.url, llm_retries=0) as d:
        body = (await d.client.get("/health")).json()
        assert _llm_calls(body) == {"ok": True, "consecutiveFailures": 0, "lastSuccessAt": None, "lastError": None,
                                    "lastCall": "none"}
        await d.client.post("/internal/tick", headers=KEY)  # the one mission's call fails
        response = await d.client.get("/health")
        assert response.status_code == 200 and response.json()["ok"] is True  # a restart would not help
        assert _llm_calls(response.json()) == {"ok": False, "consecutiveFailures": 1, "lastSuccessAt": None,
                                               "lastError": "mana-llm 503", "lastCall": "failed"}
        assert "mana_ai_llm_up{service=\"mana-ai\"} 0.0" in (await d.client.get("/metrics")).text
        llm.script(plan_reply([]))
        await insert_rows(pool, mission("m2", agent_id=None))
        await d.client.post("/internal/tick", headers=KEY)
        health = (await d.client.get("/health")).json()["llm"]
        assert health["ok"] is True and health["consecutiveFailures"] == 0 and health["lastSuccessAt"]
        assert health["lastCall"] == "ok" and health["circuit"] == "closed"
        assert "mana_ai_llm_up{service=\"mana-ai\"} 1.0" in (await d.client.get("/metrics")).text


def _llm_calls(body: dict[str, Any]) -> dict[str, Any]:
    """/health's account of the LLM calls (without the circuit and the start-up probe)."""
    return {k: v for k, v in body["llm"].items() if k not in ("circuit", "circuitDetail", "startupProbe")}


async def test_health_shows_an_open_circuit_and_the_start_up_probe_and_stays_200(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, *[{**mission(f"m{i}", user=f"u-{i}", agent_id=None), "created_at": PAST}
                              for i in range(3)])
    async with running_fake_llm(Reply(status=503, body="overloaded")) as llm, \
            running_daemon(pool, mana_llm_url=llm.url, llm_retries=0, llm_circuit_failures=2,
                           llm_circuit_probe_s=600) as d:
        with trio.fail_after(10):  # the start-up probe runs in the background: GET /v1/models
            while (await d.client.get("/health")).json()["llm"]["startupProbe"]["state"] == "pending":
                await trio.sleep(0.05)
        body = (await d.client.get("/health")).json()
        # the stand-in has no model list (404): reachable all the same
        assert body["llm"]["startupProbe"] == {"state": "ok", "error": None}
        assert body["llm"]["circuit"] == "closed" and body["llm"]["circuitDetail"]["openedAt"] is None
        await d.client.post("/internal/tick", headers=KEY)  # two users' calls fail: it opens
        response = await d.client.get("/health")
        assert response.status_code == 200 and response.json()["ok"] is True  # the daemon is alive
        llm_state = response.json()["llm"]
        assert llm_state["circuit"] == "open"
        assert llm_state["circuitDetail"]["openedAt"] is not None
        assert 0 < llm_state["circuitDetail"]["nextProbeInSeconds"] <= 600
        assert llm_state["circuitDetail"]["lastOutageError"] == "mana-llm 503"
        text = (await d.client.get("/metrics")).text
        assert 'mana_ai_llm_circuit_open{service="mana-ai"} 1.0' in text
        assert 'mana_ai_llm_circuit_opened_total{service="mana-ai"} 1.0' in text
        assert 'mana_ai_llm_circuit_parked_total{service="mana-ai"} 2.0' in text  # the first used an attempt


async def test_a_start_up_probe_that_fails_is_one_warning_and_never_an_exit(
        pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    async with running_fake_llm() as llm:
        closed_port = llm.url  # nothing listens here once the stand-in is gone
    async with running_daemon(pool, mana_llm_url=closed_port) as d:
        with trio.fail_after(10):
            while (await d.client.get("/health")).json()["llm"]["startupProbe"]["state"] == "pending":
                await trio.sleep(0.05)
        response = await d.client.get("/health")
        assert response.status_code == 200
        probe = response.json()["llm"]["startupProbe"]
        assert probe["state"] == "failed" and "unreachable" in probe["error"]
    assert len([r for r in caplog.records if r.getMessage() == "llm.startup_probe_failed"]) == 1
