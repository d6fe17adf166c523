"""upstream/research_client.py against a fake mana-api served for real on loopback."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from quart import Response, request
from quart_trio import QuartTrio

from loopback import serving
from planner.research import Article
from upstream.research_client import (
    DISCOVER_PATH,
    SEARCH_PATH,
    ResearchClient,
    ResearchFailed,
    ResearchResult,
    open_research_http_client,
)
from raw_http import Peer, raw_server

TOKEN = "service-jwt"
QUERY = "Aktuelle KI-News Ä"

FEEDS = [
    {"url": "https://a.example/feed", "title": "A", "type": "rss", "siteUrl": "https://a.example",
     "sourceHit": "https://a.example/ki"},
    {"url": "https://b.example/atom", "title": None, "type": "atom", "siteUrl": None,
     "sourceHit": "https://b.example"},
]
ARTICLES = [
    {"url": "https://a.example/1", "title": "KI-Gesetz", "excerpt": "Das Parlament …", "content": None,
     "htmlContent": None, "author": None, "imageUrl": None, "publishedAt": "2025-05-01T08:00:00.000Z",
     "feedUrl": "https://a.example/feed", "score": 7},
    {"url": "https://b.example/2", "title": "Ohne Auszug", "excerpt": None, "content": None,
     "htmlContent": None, "author": None, "imageUrl": None, "publishedAt": None,
     "feedUrl": "https://b.example/atom", "score": 2},
]
EXPECTED_ARTICLES = (
    Article("https://a.example/1", "KI-Gesetz", "Das Parlament …", "2025-05-01T08:00:00.000Z"),
    Article("https://b.example/2", "Ohne Auszug"),
)


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list → JSON; str/bytes → as is; None → empty
    hang: bool = False  # never answer (cancelled when the client goes away)
    chunks: list[bytes] | None = None  # stream these without a content-length


def discovered(feeds: Any = None) -> Reply:
    return Reply(body={"feeds": FEEDS if feeds is None else feeds, "searched": 4})


def found(articles: Any = None) -> Reply:
    return Reply(body={"articles": ARTICLES if articles is None else articles, "feedCount": 2})


@dataclass
class Call:
    path: str
    raw: bytes
    headers: dict[str, str]

    @property
    def body(self) -> Any:
        return json.loads(self.raw)


@dataclass
class FakeManaApi:
    """mana-api's two news-research routes, answering from ``replies`` by path."""

    replies: dict[str, Reply]
    url: str = ""
    calls: list[Call] = field(default_factory=list)

    def paths(self) -> list[str]:
        return [call.path for call in self.calls]

    def app(self) -> QuartTrio:
        app = QuartTrio("fake_mana_api")

        @app.post("/api/v1/news-research/<name>")
        async def news_research(name: str) -> Response:
            path = request.path
            raw = await request.get_data(cache=True, as_text=False, parse_form_data=False)  # bytes
            self.calls.append(Call(path, raw, {k.lower(): v for k, v in request.headers.items()}))
            reply = self.replies.get(path)
            if reply is None:
                return Response("not found", status=404)
            if reply.hang:
                await trio.sleep_forever()
            if reply.chunks is not None:
                async def stream() -> AsyncIterator[bytes]:
                    for chunk in reply.chunks or []:
                        yield chunk
                return Response(stream(), status=reply.status)
            if isinstance(reply.body, (dict, list)):
                return Response(json.dumps(reply.body), status=reply.status,
                                headers={"content-type": "application/json"})
            return Response(b"" if reply.body is None else reply.body, status=reply.status)

        return app


@asynccontextmanager
async def fake_mana_api(discover: Reply, search: Reply | None = None) -> AsyncIterator[FakeManaApi]:
    fake = FakeManaApi({DISCOVER_PATH: discover, SEARCH_PATH: search if search is not None else found()})
    async with serving(fake.app()) as url:
        fake.url = url
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with open_research_http_client() as client:
        yield client


def client(http: httpx.AsyncClient, url: str, **overrides: Any) -> ResearchClient:
    options: dict[str, Any] = {"token": TOKEN, "discover_timeout_s": 5.0, "search_timeout_s": 5.0}
    return ResearchClient(http, base_url=url, **(options | overrides))


async def research(http: httpx.AsyncClient, discover: Reply, search: Reply | None = None,
                   **overrides: Any) -> tuple[ResearchResult | ResearchFailed, FakeManaApi]:
    with trio.fail_after(10):
        async with fake_mana_api(discover, search) as fake:
            result = await client(http, fake.url, **overrides).research(QUERY)
    return result, fake


def closed_port() -> int:
    """A loopback port nobody listens on (bound by the OS, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- the happy path and the wire format -----------------------------------------------------


async def test_happy_path_sends_the_reference_requests(http: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        async with fake_mana_api(discovered(), found()) as fake:
            result = await client(http, fake.url + "/").research(QUERY)   # trailing slash is fine
    assert result == ResearchResult(feed_count=2, articles=EXPECTED_ARTICLES)
    assert fake.paths() == [DISCOVER_PATH, SEARCH_PATH]
    discover, search = fake.calls
    # compact JSON in the TypeScript service's key order, UTF-8 as fetch sends it
    assert discover.raw == '{"query":"Aktuelle KI-News Ä","language":"de","limit":5}'.encode()
    assert search.raw == (
        '{"feeds":["https://a.example/feed","https://b.example/atom"],'
        '"query":"Aktuelle KI-News Ä","limit":8}'
    ).encode()
    assert list(discover.body) == ["query", "language", "limit"]
    assert list(search.body) == ["feeds", "query", "limit"]
    for call in fake.calls:
        assert call.headers["content-type"] == "application/json"
        assert call.headers["authorization"] == "Bearer service-jwt"


async def test_only_string_feed_urls_are_searched(http: httpx.AsyncClient) -> None:
    feeds = [{"url": 5}, "https://bare.example", {"title": "no url"}, None,
             {"url": "https://c.example/rss"}, {"url": None}, {"url": "https://c.example/rss"}]
    result, fake = await research(http, discovered(feeds))
    assert fake.calls[1].body["feeds"] == ["https://c.example/rss", "https://c.example/rss"]
    assert isinstance(result, ResearchResult) and result.feed_count == 2


async def test_unusable_articles_are_dropped(http: httpx.AsyncClient) -> None:
    articles = [{"title": "no url"}, "https://x", None, ARTICLES[1], {"url": "https://c.example/3"}]
    result, _ = await research(http, discovered(), found(articles))
    assert result == ResearchResult(2, (Article("https://b.example/2", "Ohne Auszug"),
                                        Article("https://c.example/3", "https://c.example/3")))


async def test_articles_are_capped_at_the_search_limit(http: httpx.AsyncClient) -> None:
    articles = [{"url": f"https://a.example/{i}", "title": f"T{i}"} for i in range(12)]
    result, _ = await research(http, discovered(), found(articles))
    assert isinstance(result, ResearchResult)
    assert [a.title for a in result.articles] == [f"T{i}" for i in range(8)]


# --- HTTP failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 502, 400, 404, 302])
async def test_discover_non_2xx(http: httpx.AsyncClient, status: int) -> None:
    body = {"error": "web-search-unavailable", "message": "down"} if status == 502 else {"error": "x"}
    result, fake = await research(http, Reply(status=status, body=body))
    assert result == ResearchFailed(f"discover-{status}")
    assert fake.paths() == [DISCOVER_PATH]                  # search is not called


async def test_search_500(http: httpx.AsyncClient) -> None:
    result, fake = await research(http, discovered(), Reply(status=500, body="boom"))
    assert result == ResearchFailed("search-500")
    assert fake.paths() == [DISCOVER_PATH, SEARCH_PATH]


async def test_failure_is_logged_once_with_its_reason(
        http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="upstream.research_client"):
        await research(http, Reply(status=401, body={"error": "unauthorized"}))
    records = [r for r in caplog.records if r.name == "upstream.research_client"]
    assert [(r.getMessage(), getattr(r, "reason")) for r in records] == [("research.failed", "discover-401")]
    assert QUERY not in caplog.text


# --- bad bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"not json{", b"", "[]", '{"feeds": {"url": "https://a"}}',
                                  '{"feeds": "https://a"}', '{"searched": 0}', "null", '"feeds"'])
async def test_discover_bad_response(http: httpx.AsyncClient, body: bytes | str) -> None:
    result, fake = await research(http, Reply(body=body))
    assert result == ResearchFailed("discover-bad-response")
    assert fake.paths() == [DISCOVER_PATH]


@pytest.mark.parametrize("body", [b"<html>", '{"articles": {}}', '{"feedCount": 2}', "[]"])
async def test_search_bad_response(http: httpx.AsyncClient, body: bytes | str) -> None:
    result, _ = await research(http, discovered(), Reply(body=body))
    assert result == ResearchFailed("search-bad-response")


async def test_deeply_nested_json_is_a_bad_response(http: httpx.AsyncClient) -> None:
    result, _ = await research(http, Reply(body="[" * 100_000 + "]" * 100_000), max_response_bytes=300_000)
    assert result == ResearchFailed("discover-bad-response")


@pytest.mark.parametrize("feeds", [[], [{"url": 1}, {"title": "t"}, "https://bare.example"]])
async def test_no_feeds_skips_search(http: httpx.AsyncClient, feeds: list[Any]) -> None:
    result, fake = await research(http, discovered(feeds))
    assert result == ResearchFailed("no-feeds")
    assert fake.paths() == [DISCOVER_PATH]


@pytest.mark.parametrize("articles", [[], [{"title": "no url"}, {"url": ""}]])
async def test_no_articles(http: httpx.AsyncClient, articles: list[Any]) -> None:
    result, fake = await research(http, discovered(), found(articles))
    assert result == ResearchFailed("no-articles")
    assert fake.paths() == [DISCOVER_PATH, SEARCH_PATH]


async def test_body_over_the_cap_with_content_length(http: httpx.AsyncClient) -> None:
    result, _ = await research(http, discovered(), max_response_bytes=64)
    assert result == ResearchFailed("discover-too-large")


async def test_streamed_body_over_the_cap(http: httpx.AsyncClient) -> None:
    """Chunked, so no content-length: the read stops once the cap is passed."""
    search = Reply(chunks=[b'{"articles": [', b" " * 400, b" " * 400, b"]}"])
    result, _ = await research(http, discovered(), search, max_response_bytes=500)
    assert result == ResearchFailed("search-too-large")


async def test_streamed_body_within_the_cap(http: httpx.AsyncClient) -> None:
    body = json.dumps({"articles": ARTICLES}).encode()
    search = Reply(chunks=[body[:50], body[50:]])
    result, _ = await research(http, discovered(), search, max_response_bytes=len(body))
    assert result == ResearchResult(2, EXPECTED_ARTICLES)


# --- timeouts, unreachable, cancellation -----------------------------------------------------


async def test_discover_timeout(http: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        async with fake_mana_api(Reply(hang=True)) as fake:
            started = trio.current_time()
            result = await client(http, fake.url, discover_timeout_s=0.2).research(QUERY)
            elapsed = trio.current_time() - started
    assert result == ResearchFailed("discover-timeout")
    assert 0.2 <= elapsed < 2
    assert fake.paths() == [DISCOVER_PATH]


async def test_search_timeout(http: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        async with fake_mana_api(discovered(), Reply(hang=True)) as fake:
            result = await client(http, fake.url, search_timeout_s=0.2).research(QUERY)
    assert result == ResearchFailed("search-timeout")
    assert fake.paths() == [DISCOVER_PATH, SEARCH_PATH]


async def test_each_call_has_its_own_budget(http: httpx.AsyncClient) -> None:
    """A tight discover budget does not limit search, and the other way round."""
    with trio.fail_after(10):
        async with fake_mana_api(discovered(), Reply(hang=True)) as fake:
            result = await client(http, fake.url, discover_timeout_s=0.2, search_timeout_s=0.4).research(QUERY)
    assert result == ResearchFailed("search-timeout")


async def test_closed_port_is_unreachable(http: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        result = await client(http, f"http://127.0.0.1:{closed_port()}").research(QUERY)
    assert result == ResearchFailed("discover-unreachable")


async def test_outer_cancellation_propagates(http: httpx.AsyncClient) -> None:
    """An enclosing cancel is not turned into a timeout or any other ResearchFailed."""
    results: list[object] = []
    with trio.fail_after(10):
        async with fake_mana_api(Reply(hang=True)) as fake:
            with trio.move_on_after(0.2) as scope:
                results.append(await client(http, fake.url, discover_timeout_s=30).research(QUERY))
    assert scope.cancelled_caught
    assert results == []


async def test_client_is_reusable_after_failures(http: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        async with fake_mana_api(Reply(hang=True)) as fake:
            research_client = client(http, fake.url, discover_timeout_s=0.2)
            assert await research_client.research(QUERY) == ResearchFailed("discover-timeout")
            fake.replies[DISCOVER_PATH] = discovered()
            assert await research_client.research(QUERY) == ResearchResult(2, EXPECTED_ARTICLES)


# --- construction ----------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [
    {"token": ""}, {"token": " padded "}, {"discover_timeout_s": 0}, {"search_timeout_s": -1},
    {"search_timeout_s": float("inf")}, {"discover_timeout_s": float("nan")}, {"max_response_bytes": 0},
])
async def test_rejects_bad_settings(http: httpx.AsyncClient, overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        client(http, "http://127.0.0.1:1", **overrides)


async def test_http_client_has_explicit_limits_and_timeouts(http: httpx.AsyncClient) -> None:
    assert http.timeout.connect == 5.0 and http.timeout.read == 30.0


# --- the transport never sends a POST twice ------------------------------------------------


async def test_a_search_the_server_read_and_reset_is_not_sent_again(http: httpx.AsyncClient) -> None:
    """discover is answered on a keep-alive connection; the search POST goes out on that
    pooled connection, the server reads it to the end and resets (RST). httpx (httpcore)
    re-sends only what was never written (a connection found busy or closed before the
    request), so mana-api sees the search exactly once."""
    async def discover_then_reset(peer: Peer) -> None:
        await peer.read_request()
        await peer.respond(body=json.dumps({"feeds": FEEDS}).encode())
        await peer.read_request()
        peer.reset()

    with trio.fail_after(10):
        async with raw_server(discover_then_reset) as server:
            result = await client(http, server.url).research(QUERY)
    assert result == ResearchFailed("search-unreachable")
    assert server.accepted == 1 and server.requests == 2


async def test_a_connection_closed_while_idle_is_replaced_and_each_request_sent_once(
        http: httpx.AsyncClient) -> None:
    """The server closes the keep-alive connection after a research (its idle timeout): the
    next research opens a new one, and each of its requests arrives once."""
    async def answer_twice_then_close(peer: Peer) -> None:
        await peer.read_request()
        await peer.respond(body=json.dumps({"feeds": FEEDS}).encode())
        await peer.read_request()
        await peer.respond(body=json.dumps({"articles": ARTICLES}).encode())

    expected = ResearchResult(feed_count=2, articles=EXPECTED_ARTICLES)
    with trio.fail_after(10):
        async with raw_server(answer_twice_then_close) as server:
            research_client = client(http, server.url)
            assert await research_client.research(QUERY) == expected
            await server.closed.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert await research_client.research(QUERY) == expected
    assert server.accepted == 2 and [peer.served for peer in server.peers] == [2, 2]
