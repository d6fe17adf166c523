"""`GET /internal/rejected`: the sync_changes rows the refresh skipped, and why."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import asyncpg

from daemon import SERVICE_KEY, running_daemon
from fake_llm import running_fake_llm
from seed import fetch, insert_rows, mission

KEY = {"X-Service-Key": SERVICE_KEY}
PAST = datetime.now(timezone.utc) - timedelta(minutes=5)


async def test_rejected_rows_are_listed_newest_first_per_user_and_need_the_key(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1"), "created_at": PAST})
    poison = await fetch(pool, """
        INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id, created_at)
        VALUES ('ai', 'aiMissions', 'm-deep', 'u-1', 'update', $1::text::jsonb, 'device-1', $3),
               ('ai', 'agents', 'a-huge', 'u-2', 'insert', $2::text::jsonb, 'device-1', $3 + interval '1 second')
        RETURNING id""", '{"title": ' + "[" * 990 + "]" * 990 + "}", '{"maxTokensPerDay": 1e400}', PAST)
    async with running_fake_llm() as llm, running_daemon(pool, mana_llm_url=llm.url) as d:
        assert (await d.client.get("/internal/rejected")).status_code == 401
        assert (await d.client.get("/internal/rejected", headers=KEY)).json() == {"rows": []}
        tick = await d.client.post("/internal/tick", headers=KEY)
        assert (tick.json()["errors"], tick.json()["dueMissionCount"], tick.json()["plansWrittenBack"]) == ([], 1, 1)
        body = (await d.client.get("/internal/rejected", headers=KEY)).json()
        assert [(r["table"], r["userId"], r["recordId"], r["reason"]) for r in body["rows"]] == [
            ("agents", "u-2", "a-huge", "number-out-of-range"), ("aiMissions", "u-1", "m-deep", "too-deep")]
        deep = body["rows"][1]
        assert deep == {"changeId": str(poison[0]["id"]), "table": "aiMissions", "userId": "u-1", "recordId": "m-deep",
                        "reason": "too-deep", "detail": "data: nesting deeper than 64",
                        "rowBytes": deep["rowBytes"], "changedAt": deep["changedAt"], "rejectedAt": deep["rejectedAt"]}
        assert deep["rowBytes"] == len('{"title": ' + "[" * 990 + "]" * 990 + "}") + len("{}")
        only_u1 = (await d.client.get("/internal/rejected", params={"userId": "u-1"}, headers=KEY)).json()
        assert [r["recordId"] for r in only_u1["rows"]] == ["m-deep"]
        one = (await d.client.get("/internal/rejected", params={"limit": "1"}, headers=KEY)).json()
        assert [r["recordId"] for r in one["rows"]] == ["a-huge"]
        assert d.metric("mana_ai_rows_rejected_total", reason="too-deep") == 1
        assert d.metric("mana_ai_rows_rejected_total", reason="number-out-of-range") == 1
