"""The console in a real browser (Playwright + Debian's Chromium), against the daemon in-process.

One Chromium for the module; each test gets a fresh context. Every test records the requests the
page makes (none may go to another origin: the context refuses them and the test fails) and the
page's console errors (a CSP violation would show there). A screenshot of each page is saved
under `test-artifacts/console/`.
"""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest
import trio

from chromium import BrowserThread, Session, new_session, open_browser, screenshot
from console_seed import HOSTILE, KEY, run_of, seed_console
from daemon import SERVICE_KEY, running_daemon

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserThread]:
    with open_browser() as thread:
        yield thread


async def log_in(s: Session, key: str = SERVICE_KEY) -> None:
    await s.page.goto(s.origin + "/ui")
    await s.page.fill('[data-testid="login"] input[name="key"]', key)
    await s.page.click('[data-testid="login"] button[type="submit"]')


def assert_clean(s: Session) -> None:
    assert s.foreign_requests() == []
    assert [e for e in s.console_errors if "Content Security Policy" in e or "Refused to" in e] == []


async def test_login_with_a_wrong_then_the_right_key_shows_every_agent(pool: asyncpg.Pool,
                                                                        browser: BrowserThread) -> None:
    async with running_daemon(pool) as d:
        await seed_console(pool, d)

        async def scenario() -> None:
            s = await new_session(browser.browser, d.url)
            await s.page.goto(d.url + "/ui")
            await s.page.wait_for_selector('[data-testid="login"]')
            await screenshot(s.page, "login")
            await log_in(s, "not-the-service-key")
            error = await s.page.inner_text('[data-testid="login-error"]')
            assert "not the service key" in error
            assert await s.context.cookies() == []

            await log_in(s)
            table = s.page.locator('[data-testid="agents-table"]')
            await table.wait_for()
            text = await table.inner_text()
            for name, state in [("Recherche", "active"), ("Schläfer", "paused"), ("Archivar", "archived"),
                                ("Zweiter", "active")]:
                row = await table.locator("tr", has_text=name).inner_text()
                assert state in row, row
            assert "1,234 / 5,000" in text
            assert "manual" in await s.page.inner_text('[data-testid="cycles-table"]')
            assert "answers" in await s.page.inner_text('[data-testid="health"]')
            [cookie] = await s.context.cookies()
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
            assert await s.page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
            await screenshot(s.page, "overview")
            await s.page.set_viewport_size({"width": 390, "height": 844})  # a phone
            await screenshot(s.page, "overview-phone")
            assert_clean(s)
            await s.context.close()

        await browser.run(scenario)


async def test_the_missions_page_gives_reasons_and_renders_a_hostile_title_inert(pool: asyncpg.Pool,
                                                                                 browser: BrowserThread) -> None:
    async with running_daemon(pool) as d:
        await seed_console(pool, d)

        async def scenario() -> dict[str, str]:
            s = await new_session(browser.browser, d.url)
            await log_in(s)
            await s.page.click("nav >> text=Missions")
            await s.page.fill('[data-testid="search"] input[name="user"]', "u-1")
            await s.page.click('[data-testid="search"] button')
            table = s.page.locator('[data-testid="missions-table"]')
            await table.wait_for()
            reasons = {}
            for row in await table.locator("tbody tr").all():
                mission = await row.get_attribute("data-mission")
                assert mission is not None
                reasons[mission] = await row.locator(".reason .pill").inner_text()
            hostile = await table.locator('tr[data-mission="m-hostile"] .name').inner_text()
            assert hostile == HOSTILE  # shown as text ...
            assert await s.page.evaluate("window.__pwned") is None  # ... never run
            assert await s.page.locator('[data-testid="missions-table"] script').count() == 0
            await screenshot(s.page, "missions")
            assert_clean(s)
            await s.context.close()
            return reasons

        reasons = await browser.run(scenario)
    assert reasons == {
        "m-dead": "Dead: gave up after repeated failures", "m-hostile": "Not due yet",
        "m-planned": "Already planned for this slot", "m-backoff": "Backing off after a failed attempt",
        "m-moved": "Not due yet", "m-paused": "Not active"}


async def test_a_dead_slot_retried_in_the_browser_is_due_again_and_the_page_stays_live(
        pool: asyncpg.Pool, browser: BrowserThread) -> None:
    async with running_daemon(pool) as d:
        await seed_console(pool, d)

        async def retry_from_the_browser() -> Session:
            s = await new_session(browser.browser, d.url)
            await log_in(s)
            await s.page.click("nav >> text=Dead slots")
            await s.page.locator('[data-testid="dead-table"]').wait_for()
            await screenshot(s.page, "dead")
            row = s.page.locator('[data-testid="dead-table"] tr[data-mission="m-dead"]')
            assert "invalid key ***" in await row.inner_text() and SERVICE_KEY not in await s.page.content()
            await row.locator('[data-testid="retry"]').click()
            assert "will run again" in await s.page.inner_text('[data-testid="notice"]')
            assert await s.page.locator('tr[data-mission="m-dead"]').count() == 0
            await screenshot(s.page, "dead-after-retry")
            await s.page.evaluate("window.__notReloaded = true")
            return s

        session = await browser.run(retry_from_the_browser)
        run = await run_of(pool, "m-dead")
        assert (run["status"], run["attempts"], run["due_now"], run["settled_slot"]) == ("retry", 0, True, None)
        missions = (await d.client.get("/internal/missions/u-1", headers=KEY)).json()["missions"]
        assert {m["missionId"]: m["reason"] for m in missions}["m-dead"] == "due"

        # a change elsewhere (a script discarding the other slot) reaches the open page without a reload
        assert (await d.client.post("/internal/missions/u-1/m-moved/discard", headers=KEY)).status_code == 200

        async def sees_the_change() -> None:
            await session.page.locator('tr[data-mission="m-moved"]').wait_for(state="detached", timeout=15_000)
            assert await session.page.evaluate("window.__notReloaded") is True
            assert "No dead slots." in await session.page.inner_text('[data-testid="dead-table"]')
            assert_clean(session)

        await browser.run(sees_the_change, timeout_s=20)

    async def says_unreachable() -> None:  # the daemon has stopped
        await session.page.click('[data-testid="refresh"]')
        status = session.page.locator('[data-testid="connection"] [data-state="offline"]')
        await status.wait_for(timeout=10_000)
        assert "unreachable" in await status.inner_text()
        await screenshot(session.page, "dead-unreachable")
        assert session.foreign_requests() == []
        await session.context.close()

    with trio.fail_after(30):
        await browser.run(says_unreachable)


async def test_a_users_dead_slots_retried_in_bulk_after_a_confirmation(pool: asyncpg.Pool,
                                                                       browser: BrowserThread) -> None:
    """Retry all of u-1 (one slot runs again, the superseded one stays), then Discard all: each
    through its confirmation page, the count shown before and the result after."""
    async with running_daemon(pool) as d:
        await seed_console(pool, d)

        async def scenario() -> tuple[str, str]:
            s = await new_session(browser.browser, d.url)
            await log_in(s)
            await s.page.click("nav >> text=Dead slots")
            bulk = s.page.locator('[data-testid="bulk-table"]')
            await bulk.wait_for()
            await bulk.locator('tr[data-bulk-user="u-1"]:not([data-bulk-agent])').locator(
                '[data-testid="bulk-retry-user"]').click()
            count = await s.page.inner_text('[data-testid="bulk-count"]')
            await screenshot(s.page, "dead-bulk-confirm")
            await s.page.click('[data-testid="bulk-confirm-button"]')
            retried = await s.page.inner_text('[data-testid="notice"]')
            assert await s.page.locator('tr[data-mission="m-dead"]').count() == 0
            await s.page.click('[data-testid="bulk-discard-all"]')
            assert "Discard 1 dead slot of every user?" in await s.page.inner_text('[data-testid="bulk-count"]')
            await s.page.click('[data-testid="bulk-confirm-button"]')
            discarded = await s.page.inner_text('[data-testid="notice"]')
            assert "Discarded 1 dead slot." in discarded
            assert "No dead slots." in await s.page.inner_text('[data-testid="dead-table"]')
            await screenshot(s.page, "dead-bulk-after")
            assert_clean(s)
            await s.context.close()
            return count, retried

        count, retried = await browser.run(scenario)
        assert count == "Retry 2 dead slots of user u-1?"
        assert retried.startswith("Retried 1 dead slot. 1 could not run again")
        run = await run_of(pool, "m-dead")
        assert (run["status"], run["attempts"], run["due_now"], run["settled_slot"]) == ("retry", 0, True, None)
