"""The web-research pre-step in a mission run, against a stand-in mana-api on loopback."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
from quart import jsonify, request
from quart_trio import QuartTrio

from fake_llm import plan_reply, running_fake_llm
from loopback import serving
from observability.metrics import Metrics
from planning import CREATE_TASK, planning_runtime
from seed import insert_rows, mission

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)


def fake_mana_api(seen: list[tuple[str, str | None, Any]], *, status: int = 200) -> QuartTrio:
    app = QuartTrio("fake-mana-api")

    @app.post("/api/v1/news-research/discover")
    async def discover() -> Any:
        seen.append(("discover", request.headers.get("Authorization"), await request.get_json()))
        return jsonify({"feeds": [{"url": "https://feeds.example/rss", "title": "Feed", "type": "rss"}],
                        "searched": 1}), status

    @app.post("/api/v1/news-research/search")
    async def search() -> Any:
        seen.append(("search", request.headers.get("Authorization"), await request.get_json()))
        return jsonify({"articles": [{"url": "https://news.example/a", "title": "Neues", "excerpt": "Kurz",
                                      "publishedAt": "2026-11-23T10:00:00.000Z", "score": 3}], "feedCount": 1})

    return app


async def test_a_research_mission_gets_wrapped_web_results_with_credentials(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", objective="Finde aktuelle News zu Trio"), "created_at": PAST},
                      {**mission("m2", objective="Aufräumen"), "created_at": PAST})
    seen: list[tuple[str, str | None, Any]] = []
    metrics = Metrics()
    async with serving(fake_mana_api(seen)) as api, running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, metrics, mana_api_url=api, research_token="svc-token") as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.plans_written_back == 2
    assert [(s[0], s[1]) for s in seen] == [("discover", "Bearer svc-token"), ("search", "Bearer svc-token")]
    assert seen[0][2] == {"query": "Finde aktuelle News zu Trio", "language": "de", "limit": 5}
    assert seen[1][2] == {"feeds": ["https://feeds.example/rss"], "query": "Finde aktuelle News zu Trio", "limit": 8}
    users = [r["messages"][1]["content"] for r in llm.requests]
    user = next(u for u in users if "Finde aktuelle News" in u)
    assert not any("Web-Research" in u for u in users if u is not user)  # "Aufräumen" asks for no research
    assert ('### news-research/web: Web-Research: "Finde aktuelle News zu Trio"\n<user_data>\n'
            '# Web-Research: "Finde aktuelle News zu Trio"\n\n1 Quellen durchsucht, 1 relevante Artikel gefunden:'
            '\n\n## Neues\n> Kurz\nURL: https://news.example/a\nDatum: 2026-11-23T10:00:00.000Z\n\n---\n'
            'Nutze diese Quellen fuer deinen Plan. Verwende nur URLs die oben stehen; erfinde keine.\n</user_data>'
            ) in user
    assert metrics.registry.get_sample_value("mana_ai_research_total", {"service": "mana-ai", "outcome": "ok"}) == 1


async def test_failed_research_never_fails_the_mission(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", objective="Recherchiere etwas"), "created_at": PAST})
    seen: list[tuple[str, str | None, Any]] = []
    metrics = Metrics()
    async with serving(fake_mana_api(seen, status=401)) as api, running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, metrics, mana_api_url=api, research_token="t") as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.plans_written_back == 1 and stats.errors == []
    assert "Web-Research" not in llm.requests[0]["messages"][1]["content"]
    assert metrics.registry.get_sample_value("mana_ai_research_total",
                                             {"service": "mana-ai", "outcome": "discover-401"}) == 1


async def test_without_a_token_research_is_off(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1", objective="Finde News"), "created_at": PAST})
    async with running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        async with planning_runtime(pool, llm, mana_api_url="http://127.0.0.1:9") as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.plans_written_back == 1
    assert "Web-Research" not in llm.requests[0]["messages"][1]["content"]
