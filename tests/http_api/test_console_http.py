"""The console over HTTP: login and its cookie, the rate limit, no data without a session, CSRF,
and the retry/discard actions through the forms and the JSON API (the daemon in-process)."""

from __future__ import annotations

import logging
import re
from collections import Counter
from functools import partial

import asyncpg
import pytest
import trio

from console_seed import CSRF, HOSTILE, KEY, OLD_SLOT, SLOT, log_in, run_of, seed_console
from daemon import SERVICE_KEY, running_daemon
from fake_llm import Reply, running_fake_llm
from front_probes import split_url
from http_api.console import COOKIE, CSP
from http_api.console_auth import SessionSigner
from seed import fetch, insert_rows, mission

PROTECTED = ["/ui/missions", "/ui/missions/u-1", "/ui/missions?user=u-1", "/ui/dead", "/ui/live/overview",
             "/ui/live/missions/u-1", "/ui/live/dead"]


def cookie_header(response_headers: list[str]) -> str:
    [cookie] = [h for h in response_headers if h.startswith(f"{COOKIE}=")]
    return cookie


async def test_without_a_session_only_the_login_form_is_served(pool: asyncpg.Pool) -> None:
    async with running_daemon(pool) as d:
        await seed_console(pool, d)
        page = await d.client.get("/ui")
        assert page.status_code == 200 and 'data-testid="login"' in page.text
        assert re.search(r'<form[^>]*method="post" action="/ui/login"', page.text)
        assert re.findall(r"<input [^>]*>", page.text) == [
            '<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>']
        assert "set-cookie" not in page.headers
        assert (await d.client.get("/ui/login")).headers["location"] == "/ui"
        assert page.headers["content-security-policy"] == CSP and "default-src 'self'" in CSP
        assert page.headers["x-frame-options"] == "DENY"
        for path in PROTECTED:
            response = await d.client.get(path)
            assert (response.status_code, response.headers["location"]) == (303, "/ui"), path
            assert "u-1" not in response.text and "Kaputte" not in response.text, path
        # a forged, a foreign-key and an expired session are no session
        foreign, _ = SessionSigner("another-service-key").issue(1e9 * 2)
        expired, _ = SessionSigner(SERVICE_KEY, ttl_s=1).issue(1_000_000)
        for value in ["forged.1.2.3", foreign, expired, "x" * 5000]:
            d.client.cookies.set(COOKIE, value)
            assert (await d.client.get("/ui/dead")).status_code == 303
            assert 'data-testid="login"' in (await d.client.get("/ui")).text
        d.client.cookies.clear()
        # a POST without the cookie changes nothing
        for action in ("retry", "discard"):
            response = await d.client.post(f"/ui/dead/{action}", data={"user": "u-1", "mission": "m-dead",
                                                                      "slot": SLOT, "csrf": "x"})
            assert response.status_code == 303
        run = await run_of(pool, "m-dead")
        assert (run["status"], run["attempts"], run["discarded_at"], run["settled_slot"]) == ("dead", 5, None, SLOT)


async def test_the_right_key_sets_a_strict_httponly_expiring_cookie(pool: asyncpg.Pool) -> None:
    async with running_daemon(pool) as d:
        await seed_console(pool, d)
        response = await log_in(d.client)
        assert (response.status_code, response.headers["location"]) == (303, "/ui")
        cookie = cookie_header(response.headers.get_list("set-cookie"))
        flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "max-age", "path", "samesite"} <= flags and "secure" not in flags, cookie
        assert "SameSite=Strict" in cookie and "Path=/ui" in cookie and "Max-Age=43200" in cookie
        assert SERVICE_KEY not in cookie
        page = await d.client.get("/ui")
        assert page.status_code == 200 and 'data-testid="health"' in page.text
        assert 'data-testid="agents-table"' in page.text and 'data-testid="cycles-table"' in page.text
        assert page.headers["cache-control"] == "no-store"
        # behind a TLS-terminating proxy the cookie is Secure
        secure = await log_in(d.client, **{"X-Forwarded-Proto": "https"})
        assert "Secure" in cookie_header(secure.headers.get_list("set-cookie"))


async def test_a_wrong_key_shows_the_form_again_and_failures_are_rate_limited(
        pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="http_api.console")
    async with running_daemon(pool) as d:
        for attempt in range(5):
            wrong = await log_in(d.client, key=f"guess-number-{attempt}")
            assert wrong.status_code == 401 and 'data-testid="login"' in wrong.text
            assert 'data-testid="login-error"' in wrong.text and f"guess-number-{attempt}" not in wrong.text
            assert "set-cookie" not in wrong.headers
        limited = await log_in(d.client)  # even the right key, while the client is limited
        assert limited.status_code == 429 and 0 < int(limited.headers["retry-after"]) <= 60
        assert "Too many failed attempts" in limited.text and "set-cookie" not in limited.headers
        assert (await d.client.get("/ui/dead")).status_code == 303
    reasons = [r.reason for r in caplog.records if r.getMessage() == "console.login_failed"]  # type: ignore[attr-defined]
    assert reasons == ["wrong-key"] * 5 + ["rate-limited"]


async def _held_login(url: str, guess: str, answers: trio.MemorySendChannel[tuple[int, int]], index: int,
                      *, task_status: trio.TaskStatus[trio.SocketStream] = trio.TASK_STATUS_IGNORED) -> None:
    """A login whose headers and first body bytes are sent; the rest waits for the test to send it.
    Sends (index, status) once the response's status line has arrived."""
    body = f"key={guess}".encode()
    host, port = split_url(url)
    async with await trio.open_tcp_stream(host, port) as stream:
        await stream.send_all(b"POST /ui/login HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
                              b"Content-Type: application/x-www-form-urlencoded\r\n"
                              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:4])
        task_status.started(stream)
        received = b""
        while b"\r\n" not in received and (chunk := await stream.receive_some()):
            received += chunk
        await answers.send((index, int(received[9:12])))


async def test_parallel_wrong_logins_are_limited_before_their_bodies_arrive(
        pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    """60 logins with wrong keys at once, their bodies still on the way, and then the right key:
    at most 5 attempts are checked, and the right key is refused while the client is limited."""
    caplog.set_level(logging.INFO, logger="http_api.console")
    async with running_daemon(pool) as d:
        send, answers = trio.open_memory_channel[tuple[int, int]](100)
        statuses: dict[int, int] = {}
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                streams = [await nursery.start(_held_login, d.url, f"wrong-guess-{i:02d}", send, i)
                           for i in range(60)]
                while len(statuses) < 55:  # the attempts past the fifth are answered at once
                    index, status = await answers.receive()
                    statuses[index] = status
                right = await log_in(d.client)
                assert (right.status_code, "set-cookie" in right.headers) == (429, False)
                for index, stream in enumerate(streams):
                    if index not in statuses:
                        await stream.send_all(f"wrong-guess-{index:02d}".encode())
                while len(statuses) < 60:
                    index, status = await answers.receive()
                    statuses[index] = status
        assert Counter(statuses.values()) == {429: 55, 401: 5}
        assert (await d.client.get("/ui/dead")).status_code == 303
    reasons = Counter(r.reason for r in caplog.records  # type: ignore[attr-defined]
                      if r.getMessage() == "console.login_failed")
    assert reasons == {"wrong-key": 5, "rate-limited": 56}


async def test_logout_is_a_post_with_the_csrf_token_only(pool: asyncpg.Pool) -> None:
    async with running_daemon(pool) as d:
        assert (await d.client.get("/ui/logout")).status_code == 405  # without a session too
        await log_in(d.client)
        page = await d.client.get("/ui/dead")
        assert re.search(r'<form class="logout" method="post" action="/ui/logout">\s*'
                         r'<input type="hidden" name="csrf" value="[^"]+">', page.text)
        got = await d.client.get("/ui/logout")  # a link, an <img src>, a prefetch: changes nothing
        assert got.status_code == 405 and "set-cookie" not in got.headers
        assert (await d.client.get("/ui/dead")).status_code == 200
        for form in ({}, {"csrf": ""}, {"other": "x"}):
            refused = await d.client.post("/ui/logout", data=form)
            assert refused.status_code == 403 and "set-cookie" not in refused.headers, form
        assert (await d.client.get("/ui/dead")).status_code == 200


async def test_logout_ends_the_session(pool: asyncpg.Pool) -> None:
    async with running_daemon(pool) as d:
        await log_in(d.client)
        value = d.client.cookies[COOKIE]
        page = await d.client.get("/ui/dead")
        [csrf] = set(CSRF.findall(page.text))
        refused = await d.client.post("/ui/logout", data={"csrf": "not-the-token"})
        assert refused.status_code == 403 and (await d.client.get("/ui/dead")).status_code == 200
        response = await d.client.post("/ui/logout", data={"csrf": csrf})
        assert (response.status_code, response.headers["location"]) == (303, "/ui")
        assert f'{COOKIE}=""' in response.headers["set-cookie"] or "Max-Age=0" in response.headers["set-cookie"]
        d.client.cookies.set(COOKIE, value)  # the old value is revoked, not only forgotten
        assert (await d.client.get("/ui/dead")).status_code == 303


async def test_retry_and_discard_through_the_forms_need_the_csrf_token(
        pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="http_api.console_actions")
    async with running_daemon(pool) as d:
        await seed_console(pool, d)
        await log_in(d.client)
        page = await d.client.get("/ui/dead")
        assert 'data-testid="dead-table"' in page.text and "Kaputte Mission" in page.text
        assert SERVICE_KEY not in page.text and "invalid key ***" in page.text  # the error is redacted
        [csrf] = set(CSRF.findall(page.text))
        form = {"user": "u-1", "mission": "m-dead", "slot": SLOT}
        for wrong in ({}, {"csrf": ""}, {"csrf": csrf[:-2] + "xx"}):
            refused = await d.client.post("/ui/dead/retry", data={**form, **wrong})
            assert refused.status_code == 403 and 'data-testid="refused"' in refused.text
        assert (await run_of(pool, "m-dead"))["status"] == "dead"

        done = await d.client.post("/ui/dead/retry", data={**form, "csrf": csrf})
        assert (done.status_code, done.headers["location"]) == (303, "/ui/dead?done=retried")
        run = await run_of(pool, "m-dead")
        assert (run["status"], run["attempts"], run["due_now"], run["settled_slot"]) == ("retry", 0, True, None)
        missions = (await d.client.get("/internal/missions/u-1", headers=KEY)).json()["missions"]
        assert {m["missionId"]: m["reason"] for m in missions}["m-dead"] == "due"
        after = await d.client.get("/ui/dead?done=retried")
        assert "will run again" in after.text and "Kaputte Mission" not in after.text

        # the superseded slot of m-moved cannot run again: its Retry is disabled, Discard works
        assert re.search(r'data-testid="retry" disabled', after.text)
        moved = {"user": "u-1", "mission": "m-moved", "slot": OLD_SLOT, "csrf": csrf}
        assert (await d.client.post("/ui/dead/retry", data=moved)).headers["location"].endswith("superseded")
        assert (await d.client.post("/ui/dead/discard", data=moved)).headers["location"].endswith("discarded")
        run = await run_of(pool, "m-moved", OLD_SLOT)
        assert run["status"] == "dead" and run["discarded_at"] is not None
        assert "No dead slots." in (await d.client.get("/ui/dead")).text
    lines = [(r.getMessage(), r.mission_id, r.via) for r in caplog.records  # type: ignore[attr-defined]
             if r.getMessage().startswith("console.slot_")]
    assert lines == [("console.slot_retried", "m-dead", "console"), ("console.slot_discarded", "m-moved", "console")]


async def test_retry_and_discard_through_the_json_api(pool: asyncpg.Pool) -> None:
    async with running_daemon(pool) as d:
        await seed_console(pool, d)
        assert (await d.client.post("/internal/missions/u-1/m-dead/retry")).status_code == 401
        unknown = await d.client.post("/internal/missions/u-1/nothing/retry", headers=KEY)
        assert unknown.status_code == 404 and unknown.json()["outcome"] == "no-dead-slot"
        not_dead = await d.client.post("/internal/missions/u-1/m-backoff/discard", headers=KEY, json={"dueSlot": SLOT})
        assert not_dead.status_code == 409 and not_dead.json()["outcome"] == "not-dead"
        assert (await d.client.post("/internal/missions/u-1/m-dead/retry", headers=KEY,
                                    content=b"{not json")).status_code == 400

        # without a slot: the mission's dead slot at its current nextRunAt
        retried = await d.client.post("/internal/missions/u-1/m-dead/retry", headers=KEY)
        assert retried.status_code == 200 and retried.json() == {
            "userId": "u-1", "missionId": "m-dead", "dueSlot": SLOT, "outcome": "retried"}
        run = await run_of(pool, "m-dead")
        assert (run["status"], run["attempts"], run["settled_slot"]) == ("retry", 0, None)
        again = await d.client.post("/internal/missions/u-1/m-dead/retry", headers=KEY, params={"dueSlot": SLOT})
        assert again.status_code == 409 and again.json()["outcome"] == "not-dead"

        superseded = await d.client.post("/internal/missions/u-1/m-moved/retry", headers=KEY,
                                         json={"dueSlot": OLD_SLOT})
        assert superseded.status_code == 409 and superseded.json()["outcome"] == "superseded"
        discarded = await d.client.post("/internal/missions/u-1/m-moved/discard", headers=KEY)
        assert discarded.status_code == 200 and discarded.json()["dueSlot"] == OLD_SLOT
        twice = await d.client.post("/internal/missions/u-1/m-moved/discard", headers=KEY, params={"dueSlot": OLD_SLOT})
        assert twice.status_code == 409 and twice.json()["outcome"] == "already-discarded"
        # read again after each action, not at the next cycle: a discarded slot is not counted
        assert d.metric("mana_ai_run_ledger_slots", status="dead") == 0
        await d.client.post("/internal/tick", headers=KEY)
        assert d.metric("mana_ai_run_ledger_slots", status="dead") == 0


async def test_the_pages_show_what_the_daemon_knows(pool: asyncpg.Pool) -> None:
    async with running_daemon(pool) as d:
        await seed_console(pool, d)
        await log_in(d.client)
        overview = (await d.client.get("/ui")).text
        for shown in ("Recherche", "Schläfer", "Archivar", "Zweiter", "paused", "archived", "1,234 / 5,000"):
            assert shown in overview, shown
        assert re.search(r'<meter min="0" max="5000"[^>]*value="1234"', overview)
        assert "manual" in overview  # the seeding tick is in the cycles table
        assert 'data-testid="planned-chart"' in overview and "<title>this minute: 1 planned</title>" in overview
        assert 'data-testid="ledger-counts"' in overview
        assert re.search(r'data-testid="sync-generation">v0\.6 <span class="muted">stamps in field_timestamps</span>',
                         overview)

        page = await d.client.get("/ui/missions/u-1")
        missions = (await d.client.get("/internal/missions/u-1", headers=KEY)).json()["missions"]
        reasons = dict(re.findall(r'data-mission="([^"]+)" data-reason="([^"]+)"', page.text))
        assert reasons == {m["missionId"]: m["reason"] for m in missions}
        assert "Backing off after a failed attempt" in page.text and "Already planned for this slot" in page.text
        assert HOSTILE not in page.text and "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page.text
        assert SERVICE_KEY not in page.text
        live = await d.client.get("/ui/live/missions/u-1")
        assert 'data-testid="missions-table"' in live.text and "<html" not in live.text  # only the fragment
        assert (await d.client.get("/ui/missions/nobody")).status_code == 404
        search = await d.client.get("/ui/missions", params={"user": "u 2/x"})
        assert search.headers["location"] == "/ui/missions/u%202%2Fx"
        static = await d.client.get("/ui/static/console.js")
        assert static.status_code == 200 and static.headers["content-type"].startswith("text/javascript")
        assert (await d.client.get("/ui/static/console.js", headers={"If-None-Match": static.headers["etag"]})
                ).status_code == 304
        assert (await d.client.get("/ui/static/../app.py")).status_code == 404


async def test_a_failing_database_is_said_on_the_page_and_health_is_still_shown(pool: asyncpg.Pool) -> None:
    async with running_daemon(pool) as d:
        await seed_console(pool, d)
        await log_in(d.client)
        await fetch(pool, "ALTER TABLE mana_ai.mission_runs RENAME TO mission_runs_away")
        try:
            overview = await d.client.get("/ui")
            dead = await d.client.get("/ui/live/dead")
            action = await d.client.post("/internal/missions/u-1/m-dead/retry", headers=KEY)
        finally:
            await fetch(pool, "ALTER TABLE mana_ai.mission_runs_away RENAME TO mission_runs")
    assert overview.status_code == 200 and 'data-testid="health"' in overview.text
    assert 'data-testid="agents-table"' in overview.text  # the agents do not need the ledger
    assert overview.text.count('data-testid="db-error"') == 1 and "did not answer" in overview.text
    assert dead.status_code == 200 and 'data-testid="db-error"' in dead.text
    assert action.status_code == 503 and action.json() == {"error": "the database did not answer"}


async def test_the_overview_shows_spend_per_user_and_agent_closest_to_the_cap_first(pool: asyncpg.Pool) -> None:
    await fetch(pool, "INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, status, prompt_tokens, ts)"
                      " VALUES ('u-light', 'a1', 'x', 'used', 100, now()),"
                      " ('u-heavy', 'h1', 'x', 'used', 700, now()), ('u-heavy', 'h2', 'x', 'used', 200, now()),"
                      " ('u-heavy', 'legacy:ai-default', 'x', 'used', 50, now()),"
                      " ('u-mid', 'm1', 'x', 'used', 400, now()),"
                      " ('u-gone', 'g1', 'x', 'used', 10000, now() - interval '25 hours') RETURNING id")
    async with running_daemon(pool, user_max_tokens_per_day=1000, max_tokens_per_day=5000) as d:
        await log_in(d.client)
        overview = (await d.client.get("/ui")).text
        live = (await d.client.get("/ui/live/overview")).text
    assert 'data-testid="spend"' in overview and 'data-testid="spend"' in live
    users = re.findall(r'data-spend-user="([^"]+)"', overview)
    assert users == ["u-heavy", "u-mid", "u-light"]  # closest to the cap first; old spend is gone
    assert "950 / 1,000" in overview and "1,450 / 5,000" in overview
    heavy = overview[overview.index('data-spend-user="u-heavy"'):overview.index('data-spend-user="u-mid"')]
    assert re.findall(r'data-spend-agent="([^"]+)"', heavy) == ["h1", "h2", "legacy:ai-default"]


async def test_the_overview_shows_who_waits_for_an_llm_slot(pool: asyncpg.Pool) -> None:
    """One slot, held by a call that does not answer: the two other users wait, on the page and
    in the metrics."""
    await insert_rows(pool, *[mission(f"m-{u}", user=f"u-{u}", agent_id=None, next_run_at="2026-01-01T00:00:00.000Z")
                              for u in (1, 2, 3)])
    async with running_fake_llm(Reply(hang=True)) as llm, running_daemon(
            pool, mana_llm_url=llm.url, llm_concurrency=1, llm_timeout_s=60) as d:
        await log_in(d.client)
        assert 'data-testid="llm-queue-empty"' in (await d.client.get("/ui")).text
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(d.client.post, "/internal/tick", headers=KEY))  # it waits for the calls
            with trio.fail_after(10):
                while llm.in_flight == 0 or d.metric("mana_ai_llm_missions_waiting") < 2:
                    await trio.sleep(0.02)
            assert d.metric("mana_ai_llm_users_waiting") == 2
            overview = (await d.client.get("/ui/live/overview")).text
            table = overview[overview.index('data-testid="llm-queue-table"'):]
            waiting = re.findall(r'<a href="/ui/missions/(u-\d)">u-\d</a></td><td class="num">(\d+)</td>', table)
            assert len(waiting) == 2 and {count for _, count in waiting} == {"1"}
            assert "2 requests of 2 users wait for a slot" in overview
            nursery.cancel_scope.cancel()
        assert d.metric("mana_ai_llm_queue_wait_seconds_count") >= 1  # the first call found its slot free


async def test_the_overview_says_when_the_llm_circuit_is_open(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, *[mission(f"m-{u}", user=f"u-{u}", agent_id=None, next_run_at="2026-01-01T00:00:00.000Z")
                              for u in (1, 2, 3)])
    async with running_fake_llm(Reply(status=503, body="down")) as llm, running_daemon(
            pool, mana_llm_url=llm.url, llm_retries=0, llm_circuit_failures=2, llm_circuit_probe_s=600) as d:
        await log_in(d.client)
        before = (await d.client.get("/ui")).text
        assert 'data-testid="llm-no-call"' in before and 'data-testid="llm-circuit"' not in before
        await d.client.post("/internal/tick", headers=KEY)
        overview = (await d.client.get("/ui/live/overview")).text
    assert 'data-testid="llm-circuit"' in overview and "circuit open: missions parked" in overview
