"""The web-research pre-step's two calls to mana-api (its news research).

``ResearchClient.research(query)`` posts ``/api/v1/news-research/discover`` and then, with
every discovered feed url, ``/api/v1/news-research/search``. Each call runs under
``trio.fail_after`` and reads at most ``max_response_bytes``. Unlike the TypeScript service
(whose calls always got a 401) the calls carry ``Authorization: Bearer <token>``, since mana-api
requires a JWT.

Research never fails a mission: every failure is a value, ``ResearchFailed(reason)``, whose
reason is one of a bounded set of labels (``<stage>`` is ``discover`` or ``search``)::

    <stage>-<status>        a non-2xx answer, e.g. "discover-401", "search-502"
    <stage>-timeout         the call used its whole time budget
    <stage>-unreachable     no usable response: connect refused, reset, protocol error
    <stage>-too-large       a 2xx body over max_response_bytes
    <stage>-bad-response    a 2xx body that is not JSON or not the contract's shape
    no-feeds                discover found no feed url (search is not called)
    no-articles             search found no usable article

``trio.Cancelled`` is never caught.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import httpx
import trio

from planner.research import DISCOVER_LIMIT, RESEARCH_LANGUAGE, SEARCH_LIMIT, Article
from upstream._http import declared_larger_than, read_up_to

__all__ = [
    "DISCOVER_PATH",
    "SEARCH_PATH",
    "ResearchClient",
    "ResearchFailed",
    "ResearchResult",
    "open_research_http_client",
]

log = logging.getLogger(__name__)

DISCOVER_PATH = "/api/v1/news-research/discover"
SEARCH_PATH = "/api/v1/news-research/search"
CONNECT_TIMEOUT_S = 5.0
#: the shared client's phase timeouts; each call replaces read/write/pool with its own budget
DEFAULT_TIMEOUT_S = 30.0
#: research runs at most once per planned mission; a few connections are plenty
MAX_CONNECTIONS = 8


@dataclass(frozen=True, slots=True)
class ResearchResult:
    """What research found; ``feed_count`` is the number of discovered feed urls searched."""

    feed_count: int
    articles: tuple[Article, ...]


@dataclass(frozen=True, slots=True)
class ResearchFailed:
    """Research gave nothing; ``reason`` is a short label from the module docstring."""

    reason: str


class DiscoverRequest(TypedDict):
    """Keys in the TypeScript service's order."""

    query: str
    language: str
    limit: int


class SearchRequest(TypedDict):
    """Keys in the TypeScript service's order."""

    feeds: list[str]
    query: str
    limit: int


def open_research_http_client() -> httpx.AsyncClient:
    """One client per process for mana-api research calls, with explicit limits and timeouts.

    ``max_keepalive_connections == max_connections`` avoids keep-alive churn
    (with fewer keep-alive slots than connections, each burst opens new TCP connections).
    """
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS),
        timeout=httpx.Timeout(DEFAULT_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
    )


class ResearchClient:
    """Discover feeds for a query, then search them; failures come back as ``ResearchFailed``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        token: str,
        discover_timeout_s: float = 15,
        search_timeout_s: float = 30,
        max_response_bytes: int = 2_097_152,
    ) -> None:
        for name, value in (("discover_timeout_s", discover_timeout_s), ("search_timeout_s", search_timeout_s)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if max_response_bytes < 1:
            raise ValueError(f"max_response_bytes must be >= 1, got {max_response_bytes}")
        if not token or token != token.strip():
            raise ValueError("token must be non-empty without surrounding whitespace")
        self._http = http
        base = base_url.rstrip("/")
        self._discover_url = base + DISCOVER_PATH
        self._search_url = base + SEARCH_PATH
        self._headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
        self._discover_timeout_s = float(discover_timeout_s)
        self._search_timeout_s = float(search_timeout_s)
        self._max_response_bytes = max_response_bytes

    async def research(self, query: str) -> ResearchResult | ResearchFailed:
        """Discover (15 s), then search every discovered feed (30 s); never raises for I/O."""
        discover: DiscoverRequest = {"query": query, "language": RESEARCH_LANGUAGE, "limit": DISCOVER_LIMIT}
        answer = await self._post("discover", self._discover_url, discover, self._discover_timeout_s)
        if isinstance(answer, ResearchFailed):
            return answer
        feeds = _feed_urls(answer)
        if feeds is None:
            return _failed("discover-bad-response")
        if not feeds:
            return _failed("no-feeds")
        search: SearchRequest = {"feeds": feeds, "query": query, "limit": SEARCH_LIMIT}
        answer = await self._post("search", self._search_url, search, self._search_timeout_s)
        if isinstance(answer, ResearchFailed):
            return answer
        articles = _articles(answer)
        if articles is None:
            return _failed("search-bad-response")
        if not articles:
            return _failed("no-articles")
        # mana-api honours `limit`; a server that does not still cannot grow the prompt
        return ResearchResult(feed_count=len(feeds), articles=tuple(articles[:SEARCH_LIMIT]))

    async def _post(
        self, stage: str, url: str, body: DiscoverRequest | SearchRequest, timeout_s: float
    ) -> object:
        """The decoded JSON of a 2xx answer, or a ``ResearchFailed`` (JSON never is one)."""
        # httpx times each phase; make them as long as the whole call so that fail_after is
        # what ends a slow call, and keep the shared client's (shorter) connect bound.
        connect_s = self._http.timeout.connect
        timeout = httpx.Timeout(timeout_s, connect=timeout_s if connect_s is None else min(connect_s, timeout_s))
        try:
            with trio.fail_after(timeout_s):
                async with self._http.stream("POST", url, content=_encode(body), headers=self._headers,
                                             timeout=timeout) as response:
                    if not response.is_success:
                        return _failed(f"{stage}-{response.status_code}")
                    raw = await _read_capped(response, self._max_response_bytes)
        except (trio.TooSlowError, httpx.TimeoutException) as exc:
            return _failed(f"{stage}-timeout", exc)
        except httpx.TransportError as exc:
            return _failed(f"{stage}-unreachable", exc)
        except httpx.DecodingError as exc:              # a broken gzip/brotli body
            return _failed(f"{stage}-bad-response", exc)
        if raw is None:
            return _failed(f"{stage}-too-large")
        try:
            data: object = json.loads(raw)
        except (ValueError, RecursionError) as exc:     # RecursionError: absurdly deep nesting
            return _failed(f"{stage}-bad-response", exc)
        return data


def _failed(reason: str, exc: BaseException | None = None) -> ResearchFailed:
    log.warning("research.failed", extra={"reason": reason,
                                          "error": None if exc is None else type(exc).__name__})
    return ResearchFailed(reason)


def _encode(body: DiscoverRequest | SearchRequest) -> bytes:
    """Compact UTF-8 JSON as ``JSON.stringify`` sends it; a lone surrogate is escaped instead."""
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return json.dumps(body, separators=(",", ":")).encode()


def _feed_urls(data: object) -> list[str] | None:
    """Every string ``url`` of ``data.feeds``, in order; None when ``feeds`` is not a list."""
    feeds: Any = data.get("feeds") if isinstance(data, Mapping) else None
    if not isinstance(feeds, list):
        return None
    return [feed["url"] for feed in feeds if isinstance(feed, Mapping) and isinstance(feed.get("url"), str)]


def _articles(data: object) -> list[Article] | None:
    """The usable articles of ``data.articles``; None when ``articles`` is not a list."""
    articles: Any = data.get("articles") if isinstance(data, Mapping) else None
    if not isinstance(articles, list):
        return None
    return [article for article in map(Article.from_json, articles) if article is not None]


async def _read_capped(response: httpx.Response, limit: int) -> bytes | None:
    """The whole (decoded) body, or None once it exceeds ``limit`` bytes."""
    if declared_larger_than(response, limit):
        return None
    body, more = await read_up_to(response, limit)
    return None if more else body
