"""The console's bulk recovery over HTTP: the per-user and per-agent table, a confirmation page
with the count (a GET changes nothing), the form's CSRF token, a scope that must be named, the
result shown after the redirect, and one log line naming the console session."""

from __future__ import annotations

import logging
import re

import asyncpg
import pytest

from console_seed import CSRF, log_in
from daemon import running_daemon
from dead_seed import DEAD, DISCARDED, RETRIED, mixed, seed, states


async def test_without_a_session_nothing_is_shown_or_changed(pool: asyncpg.Pool) -> None:
    await seed(pool, mixed())
    before = await states(pool)
    async with running_daemon(pool) as d:
        confirm = await d.client.get("/ui/dead/bulk", params={"action": "discard", "all": "1"})
        assert (confirm.status_code, confirm.headers["location"]) == (303, "/ui")
        for action in ("retry", "discard"):
            posted = await d.client.post(f"/ui/dead/bulk/{action}", data={"all": "1", "csrf": "x"})
            assert (posted.status_code, posted.headers["location"]) == (303, "/ui")
    assert await states(pool) == before


async def test_the_dead_page_offers_bulk_actions_per_user_and_agent(pool: asyncpg.Pool) -> None:
    await seed(pool, mixed())
    async with running_daemon(pool) as d:
        await log_in(d.client)
        page = (await d.client.get("/ui/dead")).text
        live = (await d.client.get("/ui/live/dead")).text
    for html in (page, live):
        table = html[html.index('data-testid="bulk-table"'):]
        rows = re.findall(r'<tr data-bulk-user="([^"]+)"(?: data-bulk-agent="([^"]*)")?>.*?<td class="num">([\d,]+)</td>',
                          table, re.S)
        assert rows == [("u-a", "", "4"), ("u-a", "a1", "2"), ("u-a", "a2", "1"), ("u-a", "", "1"),
                        ("u-b", "", "2"), ("u-b", "a1", "1"), ("u-b", "a9", "1")]
        assert "Everyone: 6 dead slots" in html
        assert 'href="/ui/dead/bulk?action=retry&amp;user=u-a&amp;agent=a1"' in html
        assert 'href="/ui/dead/bulk?action=discard&amp;all=1"' in html


async def test_a_bulk_retry_is_confirmed_with_its_count_and_needs_the_csrf_token(
        pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="http_api.dead_slots")
    await seed(pool, mixed())
    before = await states(pool)
    async with running_daemon(pool) as d:
        await log_in(d.client)
        confirm = await d.client.get("/ui/dead/bulk", params={"action": "retry", "user": "u-a", "agent": "a1"})
        assert confirm.status_code == 200 and 'data-testid="bulk-confirm"' in confirm.text
        assert re.search(r'data-testid="bulk-count">Retry <strong>2</strong> dead slots of agent a1 of user u-a\?',
                         confirm.text)
        [csrf] = set(CSRF.findall(confirm.text))
        form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">',
                               confirm.text[confirm.text.index('data-testid="bulk-form"'):]))
        assert form == {"csrf": csrf, "user": "u-a", "agent": "a1"}
        assert await states(pool) == before  # the confirmation page changed nothing

        scope = {"user": "u-a", "agent": "a1"}
        for wrong in ({}, {"csrf": ""}, {"csrf": csrf[:-2] + "xx"}):
            refused = await d.client.post("/ui/dead/bulk/retry", data={**scope, **wrong})
            assert refused.status_code == 403 and 'data-testid="refused"' in refused.text
        for unnamed in ({"csrf": csrf}, {"csrf": csrf, "agent": "a1"}, {"csrf": csrf, "all": "yes"},
                        {"csrf": csrf, "all": "1", "user": "u-a"}):
            nothing = await d.client.post("/ui/dead/bulk/retry", data=unnamed)
            assert (nothing.status_code, nothing.headers["location"]) == (303, "/ui/dead"), unnamed
        assert await states(pool) == before

        done = await d.client.post("/ui/dead/bulk/retry", data=form)
        assert (done.status_code, done.headers["location"]) == (
            303, "/ui/dead?bulk=retry&changed=2&superseded=0&complete=1")
        shown = await d.client.get(done.headers["location"])
        assert 'data-testid="notice"' in shown.text and "Retried 2 dead slots." in shown.text
    after = await states(pool)
    assert {k for k, v in after.items() if v != before[k]} == {("u-a", "m1"), ("u-a", "m2")}
    assert after[("u-a", "m1")] == RETRIED and after[("u-b", "m1")] == DEAD
    [line] = [r for r in caplog.records if r.getMessage() == "dead_slots.retried"]
    assert (line.via, line.scope_user, line.scope_agent, line.slots) == ("console", "u-a", "a1", 2)  # type: ignore[attr-defined]
    assert re.fullmatch(r"[0-9a-f]{12}", line.session)  # type: ignore[attr-defined]


async def test_discard_all_from_the_console(pool: asyncpg.Pool) -> None:
    await seed(pool, mixed())
    before = await states(pool)
    async with running_daemon(pool) as d:
        await log_in(d.client)
        confirm = await d.client.get("/ui/dead/bulk", params={"action": "discard", "all": "1"})
        assert "Discard <strong>6</strong> dead slots of every user?" in confirm.text
        [csrf] = set(CSRF.findall(confirm.text))
        done = await d.client.post("/ui/dead/bulk/discard", data={"csrf": csrf, "all": "1"})
        page = await d.client.get(done.headers["location"])
        assert "Discarded 6 dead slots." in page.text and "No dead slots." in page.text
        assert d.metric("mana_ai_run_ledger_slots", status="dead") == 0
        again = await d.client.get("/ui/dead/bulk", params={"action": "discard", "all": "1"})
        assert 'data-testid="bulk-none"' in again.text and 'data-testid="bulk-form"' not in again.text
    after = await states(pool)
    assert {after[k] for k, v in before.items() if v == DEAD} == {DISCARDED}
    assert all(after[k] == v for k, v in before.items() if v != DEAD)
