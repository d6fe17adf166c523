"""One headless Chromium (Debian's `/usr/bin/chromium`) driven by Playwright, for browser tests.

Playwright's API runs on asyncio; the tests run on trio with trio-asyncio, which replaces
asyncio's loop factories in this process. So the browser lives in a thread of its own on a
plain `asyncio.SelectorEventLoop` (built directly, not through the patched factories), and a
trio test hands it coroutines with `await browser.run(...)`, waiting in a worker thread: the
daemon under test goes on serving meanwhile. One browser per test module (`open_browser`);
each test makes its own context (cookies, requests) with `new_context`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pytest
import trio
from playwright.async_api import Browser, BrowserContext, Page, Route, async_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "console"
T = TypeVar("T")


class BrowserThread:
    """Chromium on an asyncio loop in a thread of its own; `run` executes a coroutine there."""

    def __init__(self) -> None:
        self._loop = asyncio.SelectorEventLoop()
        self._ready: concurrent.futures.Future[Browser] = concurrent.futures.Future()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="chromium", daemon=True)

    def start(self, timeout_s: float = 60) -> None:
        self._thread.start()
        self.browser = self._ready.result(timeout_s)

    def close(self, timeout_s: float = 30) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)

    async def run(self, work: Callable[[], Awaitable[T]], timeout_s: float = 30) -> T:
        """Run `work()` on the browser's loop; fails after `timeout_s`."""
        async def bounded() -> T:
            return await asyncio.wait_for(work(), timeout_s)
        future = asyncio.run_coroutine_threadsafe(bounded(), self._loop)
        return await trio.to_thread.run_sync(future.result, abandon_on_cancel=True)

    def _main(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                self._ready.set_result(browser)
                await self._stop.wait()
                await browser.close()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise


@contextmanager
def open_browser() -> Iterator[BrowserThread]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    thread = BrowserThread()
    thread.start()
    try:
        yield thread
    finally:
        thread.close()


@dataclass
class Session:
    """A browser context and page on the daemon at `origin`, recording every request it makes and
    every error the page logs."""

    origin: str
    context: BrowserContext
    page: Page
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)  # CSP violations show up here

    def foreign_requests(self) -> list[str]:
        return [url for url in self.requests if _origin(url) != self.origin]


async def new_session(browser: Browser, origin: str, *, width: int = 1280, height: int = 900) -> Session:
    """A fresh context whose requests to any other origin are recorded and refused."""
    context = await browser.new_context(viewport={"width": width, "height": height}, service_workers="block")
    page = await context.new_page()
    session = Session(origin, context, page)

    async def gatekeeper(route: Route) -> None:
        if _origin(route.request.url) == origin:
            await route.continue_()
        else:
            await route.abort()

    context.on("request", lambda request: session.requests.append(request.url))
    page.on("console", lambda message: session.console_errors.append(message.text)
            if message.type == "error" else None)
    await context.route("**/*", gatekeeper)
    return session


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
