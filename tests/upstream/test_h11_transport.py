"""upstream/h11_transport.py (and LlmClient on it) against raw HTTP/1.1 servers on loopback.

The servers here are plain trio + h11 so that they can misbehave on purpose: close idle
connections, reset mid-response, send garbage, trickle a body, speak TLS with a certificate
made for the test. tests/upstream/test_llm_client.py covers the well-behaved cases (Quart-Trio).
"""

from __future__ import annotations

import datetime
import gzip
import ipaddress
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from raw_http import OK_BODY, Peer, RawServer, answer_all, raw_server
from upstream.errors import LlmBadResponse, LlmHttpError, LlmTimeout, LlmUnavailable
from upstream.fair_slots import FairSlots
from upstream.h11_transport import Endpoint, H11Client, H11ClientStatistics
from upstream.llm import Completion, LlmClient, open_llm_http_client

MODEL = "gpt-4o-mini"
PATH = b"/v1/chat/completions"


@dataclass
class Seen:
    retries: list[str] = field(default_factory=list)


def llm(http: H11Client, url: str, seen: Seen | None = None, **overrides: Any) -> LlmClient:
    seen = seen if seen is not None else Seen()
    options: dict[str, Any] = {
        "api_key": "k", "model": MODEL, "timeout_s": 5.0, "retries": 2,
        "limiter": FairSlots(4), "on_retry": seen.retries.append,
        "backoff_base_s": 0.01, "backoff_max_s": 0.05,
    }
    return LlmClient(http, base_url=url, **(options | overrides))


def endpoint(server: RawServer) -> Endpoint:
    return Endpoint.from_url(server.url + PATH.decode())


@pytest.fixture
async def http() -> AsyncIterator[H11Client]:
    async with open_llm_http_client(4) as client:
        yield client


# --- keep-alive -------------------------------------------------------------------------------


async def test_sequential_calls_share_one_connection(http: H11Client) -> None:
    with trio.fail_after(10):
        async with raw_server() as server:
            client = llm(http, server.url)
            for _ in range(5):
                assert (await client.complete("s", "u")).content == "ok"
    assert server.accepted == 1 and server.requests == 5
    assert http.statistics() == H11ClientStatistics(connections=1, idle=1, connects=1)


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_connection_closed_while_idle_is_replaced_without_a_failure(http: H11Client, how: str) -> None:
    """The server closes after answering (no `Connection: close`), as a keep-alive timeout
    does, with a FIN or an RST: the pooled socket turns readable while idle, so it is known
    dead before the next request is written. That call opens a new connection for free: no
    try is counted and the request arrives exactly once."""
    async def answer_then_close(peer: Peer) -> None:
        await peer.read_request()
        await peer.respond()
        if how == "reset":
            peer.reset()

    seen = Seen()
    with trio.fail_after(10):
        async with raw_server(answer_then_close) as server:
            client = llm(http, server.url, seen)
            assert (await client.complete("s", "u")).attempts == 1
            (pooled,) = http._idle[endpoint(server).origin]  # white box: until the close reached it
            await trio.lowlevel.wait_readable(pooled.socket)
            assert (await client.complete("s", "u")).attempts == 1
            assert [peer.served for peer in server.peers] == [1, 1]   # each request arrived once
    assert server.accepted == 2 and server.requests == 2 and seen.retries == []
    assert client.health().ok and client.health().consecutive_failures == 0


STRAY_408 = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


@pytest.mark.parametrize("when", ["with the answer", "while idle"])
async def test_a_connection_with_bytes_after_the_answer_is_not_reused(http: H11Client, when: str) -> None:
    """Some servers send `408 Request Timeout` before closing an idle connection. Had the
    connection been reused, that 408 would be read as the answer to the next request. It is
    dropped instead: bytes in the same read as the answer keep it out of the pool, and a
    pooled connection readable while idle is closed unused."""
    idle = trio.Event()

    async def answer_then_408(peer: Peer) -> None:
        if peer.index == 0:
            await peer.read_request()
            if when == "with the answer":
                await peer.send_raw(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s%s"
                                    % (len(OK_BODY), OK_BODY, STRAY_408))
            else:
                await peer.respond()
                await idle.wait()
                await peer.send_raw(STRAY_408)
            await peer.read_request()                        # stays open until the client closes it
            return
        await answer_all(peer)

    seen = Seen()
    with trio.fail_after(10):
        async with raw_server(answer_then_408) as server:
            client = llm(http, server.url, seen)
            await client.complete("s", "u")
            if when == "with the answer":
                assert http.statistics() == H11ClientStatistics(connections=0, idle=0, connects=1)
            else:
                (pooled,) = http._idle[endpoint(server).origin]  # white box: until the 408 is in its buffer
                idle.set()
                await trio.lowlevel.wait_readable(pooled.socket)
            assert (await client.complete("s", "u")).content == "ok"
    assert server.accepted == 2 and server.requests == 2 and seen.retries == []


async def test_idle_connections_expire_after_keepalive_s(mock_clock: trio.testing.MockClock) -> None:
    """The clock is a MockClock that only moves when told (the sockets are real)."""
    async with raw_server() as server, H11Client(1, keepalive_s=30.0) as http:
        async def call() -> None:
            async with http.stream(endpoint(server), [], b"{}") as response:
                await response.read_up_to(100_000)

        await call()
        mock_clock.jump(29.0)
        await call()                                         # still fresh: reused
        mock_clock.jump(30.0)
        await call()                                         # expired: closed, a new one opened
        assert http.statistics() == H11ClientStatistics(connections=1, idle=1, connects=2)
    assert server.accepted == 2


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_pooled_connection_dropped_after_the_request_is_a_try_that_counts(
        http: H11Client, how: str) -> None:
    """The server reads the request on a pooled connection and drops it before one byte of
    an answer (a proxy's idle timeout shorter than the generation, or a close racing the
    request). The LLM may be doing the work: the transport does not send it again on its
    own. LlmClient's retry sends it once more, counted as a try like any other."""
    async def answer_once_then_drop(peer: Peer) -> None:
        if peer.index == 0:
            await peer.read_request()
            await peer.respond()
            await peer.read_request()
            if how == "reset":
                peer.reset()
            return                                              # closed by the server: EOF
        await answer_all(peer)

    seen = Seen()
    with trio.fail_after(10):
        async with raw_server(answer_once_then_drop) as server:
            client = llm(http, server.url, seen)
            await client.complete("s", "u")
            result = await client.complete("s", "u")
    assert result.attempts == 2 and seen.retries == ["connect"] and client.health().ok
    assert server.accepted == 2 and server.requests == 3   # the dropped request and its counted retry


async def test_an_upstream_that_resets_after_reading_gets_exactly_tries_requests_per_attempt(
        http: H11Client) -> None:
    """The upstream answers at first, so the pool holds four keep-alive connections; then it
    reads every request to the end and resets the connection (RST) without a byte of answer.
    Each call (an attempt of a mission) makes exactly ``1 + retries`` tries, and each try is
    exactly one request at the upstream: none is resent for free on a pooled connection."""
    resetting = False
    arrived = 0
    all_in = trio.Event()

    async def answer_then_reset(peer: Peer) -> None:
        nonlocal arrived
        while await peer.read_request() is not None:
            if resetting:
                peer.reset()
                return
            arrived += 1
            if arrived == 4:
                all_in.set()
            await all_in.wait()                                  # four calls in flight: four connections
            await peer.respond()

    seen = Seen()
    with trio.fail_after(10):
        async with raw_server(answer_then_reset) as server:
            client = llm(http, server.url, seen, retries=2)
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(client.complete, "s", "u")
            assert http.statistics() == H11ClientStatistics(connections=4, idle=4, connects=4)
            resetting = True
            per_attempt = []
            for _ in range(3):
                before = server.requests
                with pytest.raises(LlmUnavailable):
                    await client.complete("s", "u")
                per_attempt.append(server.requests - before)
    assert per_attempt == [3, 3, 3]
    assert seen.retries == ["connect", "connect"] * 3
    assert server.requests == 4 + 9
    assert http.statistics().connections == 0


async def test_a_fresh_connection_dropped_with_the_request_is_not_resent_by_the_pool(http: H11Client) -> None:
    """Only a *pooled* connection can be stale; a new one failing is the LLM's failure, which
    LlmClient retries (counted) as before."""
    async def drop_first(peer: Peer) -> None:
        if peer.index == 0:
            await peer.read_request()
            return
        await answer_all(peer)

    seen = Seen()
    with trio.fail_after(10):
        async with raw_server(drop_first) as server:
            result = await llm(http, server.url, seen).complete("s", "u")
    assert result.attempts == 2 and seen.retries == ["connect"] and server.accepted == 2


async def test_a_response_that_began_is_never_resent(http: H11Client) -> None:
    """On a pooled connection the status line and half the body arrive, then a reset: the
    request may have been done, so neither the pool nor LlmClient sends it again."""
    async def answer_then_break(peer: Peer) -> None:
        await peer.read_request()
        await peer.respond()
        await peer.read_request()
        await peer.send_raw(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n{\"choices\": [")
        await trio.sleep(0.05)
        peer.reset()

    seen = Seen()
    with trio.fail_after(10):
        async with raw_server(answer_then_break) as server:
            client = llm(http, server.url, seen)
            await client.complete("s", "u")
            with pytest.raises(LlmUnavailable) as caught:
                await client.complete("s", "u")
    assert isinstance(caught.value.__cause__, (httpx.ReadError, httpx.RemoteProtocolError))
    assert server.accepted == 1 and server.requests == 2 and seen.retries == []
    assert http.statistics().connections == 0                  # the broken one was dropped


async def test_a_pooled_connection_that_began_a_status_line_is_not_resent_by_the_pool(http: H11Client) -> None:
    """Bytes of a response arrived, so the connection was not merely stale: the pool does not
    send the request again. What came is no response (a cut status line), which LlmClient
    retries as a connect failure, counted, as it did with httpx."""
    async def answer_then_cut(peer: Peer) -> None:
        if peer.index == 0:
            await peer.read_request()
            await peer.respond()
            await peer.read_request()
            await peer.send_raw(b"HTTP/1.1 2")
            return
        await answer_all(peer)

    seen = Seen()
    with trio.fail_after(10):
        async with raw_server(answer_then_cut) as server:
            client = llm(http, server.url, seen)
            await client.complete("s", "u")
            result = await client.complete("s", "u")
    assert result.attempts == 2 and seen.retries == ["connect"]
    assert server.accepted == 2 and server.requests == 3


async def test_connection_close_from_the_server_is_honoured(http: H11Client) -> None:
    async def close_each(peer: Peer) -> None:
        await peer.read_request()
        await peer.respond(headers=[("connection", "close")])

    with trio.fail_after(10):
        async with raw_server(close_each) as server:
            client = llm(http, server.url)
            for _ in range(3):
                await client.complete("s", "u")
    assert server.accepted == 3 and http.statistics() == H11ClientStatistics(0, 0, 3)


# --- faults -----------------------------------------------------------------------------------


async def test_a_reset_mid_response_is_unavailable_and_not_retried(http: H11Client) -> None:
    async def reset_mid_body(peer: Peer) -> None:
        await peer.read_request()
        await peer.send_raw(b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n" + OK_BODY[:20])
        await trio.sleep(0.05)
        peer.reset()

    seen = Seen()
    with trio.fail_after(10):
        async with raw_server(reset_mid_body) as server:
            with pytest.raises(LlmUnavailable) as caught:
                await llm(http, server.url, seen).complete("s", "u")
    assert str(caught.value).startswith(f"mana-llm unreachable at {server.url}/v1/chat/completions: ")
    assert seen.retries == [] and server.requests == 1


async def test_a_body_cut_short_by_eof_is_unavailable(http: H11Client) -> None:
    async def short_body(peer: Peer) -> None:
        await peer.read_request()
        await peer.send_raw(b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n" + OK_BODY[:20])

    seen = Seen()
    with trio.fail_after(10):
        async with raw_server(short_body) as server:
            with pytest.raises(LlmUnavailable) as caught:
                await llm(http, server.url, seen).complete("s", "u")
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    assert seen.retries == [] and server.requests == 1


@pytest.mark.parametrize("garbage", [b"SSH-2.0-OpenSSH_9.6\r\n\r\n", b"HTTP/1.1 abc nope\r\n\r\n",
                                     b"\x16\x03\x01\x00\xa5\x01\x00"])
async def test_garbage_instead_of_a_status_line_is_unavailable_after_retries(
        http: H11Client, garbage: bytes) -> None:
    """As with httpx: no response came, so LlmClient retries it as a connect failure."""
    async def talk_garbage(peer: Peer) -> None:
        await peer.read_request()
        await peer.send_raw(garbage)

    seen = Seen()
    with trio.fail_after(10):
        async with raw_server(talk_garbage) as server:
            with pytest.raises(LlmUnavailable) as caught:
                await llm(http, server.url, seen).complete("s", "u")
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    assert seen.retries == ["connect", "connect"] and server.requests == 3
    assert http.statistics().connections == 0


async def test_a_declared_oversized_body_is_refused_before_reading_it(http: H11Client) -> None:
    """Content-Length over the cap: the call ends at once, without waiting for the body."""
    async def huge(peer: Peer) -> None:
        await peer.read_request()
        await peer.send_raw(b"HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\n{")
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with raw_server(huge) as server:
            with pytest.raises(LlmBadResponse, match="larger than 1000 bytes"):
                await llm(http, server.url, timeout_s=5.0, max_response_bytes=1000).complete("s", "u")
    assert http.statistics().connections == 0


async def test_an_endless_chunked_body_is_cut_at_the_cap(http: H11Client) -> None:
    async def endless(peer: Peer) -> None:
        await peer.read_request()
        await peer.send_raw(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:
            await peer.send_raw(b"400\r\n" + b"x" * 0x400 + b"\r\n")

    with trio.fail_after(10):
        async with raw_server(endless) as server:
            with pytest.raises(LlmBadResponse, match="larger than 50000 bytes"):
                await llm(http, server.url, max_response_bytes=50_000).complete("s", "u")
    assert http.statistics().connections == 0


async def test_a_slow_body_past_the_timeout_is_a_timeout_and_drops_the_connection(http: H11Client) -> None:
    async def trickle(peer: Peer) -> None:
        await peer.read_request()
        await peer.send_raw(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(OK_BODY))
        for byte in OK_BODY:
            await peer.send_raw(bytes([byte]))
            await trio.sleep(0.05)

    seen = Seen()
    with trio.fail_after(10):
        async with raw_server(trickle) as server:
            started = trio.current_time()
            with pytest.raises(LlmTimeout):
                await llm(http, server.url, seen, timeout_s=0.3).complete("s", "u")
            assert trio.current_time() - started < 1.5
    assert seen.retries == [] and server.requests == 1 and http.statistics().connections == 0


async def test_the_read_timeout_bounds_a_silent_server_when_the_caller_sets_no_deadline() -> None:
    async def silent(peer: Peer) -> None:
        await peer.read_request()
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with raw_server(silent) as server, H11Client(1, read_timeout_s=0.2) as http:
            with pytest.raises(httpx.ReadTimeout):
                async with http.stream(endpoint(server), [], b"{}"):
                    pass
            assert http.statistics().connections == 0


async def test_llm_client_waits_its_own_timeout_not_the_client_read_timeout() -> None:
    """LlmClient passes its timeout_s as the request's read timeout: a server silent for
    longer than the shared client's read timeout but within timeout_s is waited for."""
    async def think(peer: Peer) -> None:
        await peer.read_request()
        await trio.sleep(0.4)
        await peer.respond()

    with trio.fail_after(10):
        async with raw_server(think) as server, H11Client(1, read_timeout_s=0.1) as http:
            assert (await llm(http, server.url, timeout_s=3.0).complete("s", "u")).content == "ok"


async def test_retry_after_is_honoured_and_the_connection_kept(http: H11Client) -> None:
    """429 and 503 bodies are read to the end, so the same connection serves the retry."""
    async def busy_twice(peer: Peer) -> None:
        await peer.read_request()
        await peer.respond(429, b'{"detail": "slow down"}', [("retry-after", "0")])
        await peer.read_request()
        await peer.respond(503, b"busy", [("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")])
        await answer_all(peer)

    seen = Seen()
    with trio.fail_after(5):
        async with raw_server(busy_twice) as server:
            client = llm(http, server.url, seen, backoff_base_s=100.0, backoff_max_s=100.0, random=lambda: 1.0)
            result = await client.complete("s", "u")
    assert result.attempts == 3 and seen.retries == ["429", "5xx"]
    assert server.accepted == 1 and server.requests == 3


async def test_an_error_status_keeps_its_message(http: H11Client) -> None:
    async def bad_request(peer: Peer) -> None:
        await peer.read_request()
        await peer.respond(400, b'{"detail": "no such model"}')

    with trio.fail_after(5):
        async with raw_server(bad_request) as server:
            with pytest.raises(LlmHttpError) as caught:
                await llm(http, server.url).complete("s", "u")
    assert str(caught.value) == 'mana-llm 400: {"detail": "no such model"}'


@pytest.mark.parametrize(("encoding", "encode"), [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),                                         # zlib-wrapped, as specified
    ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),  # raw, as some servers send
])
async def test_compressed_bodies_are_decoded(http: H11Client, encoding: str,
                                             encode: Callable[[bytes], bytes]) -> None:
    async def compressed(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.respond(body=encode(OK_BODY), headers=[("content-encoding", encoding)])

    with trio.fail_after(5):
        async with raw_server(compressed) as server:
            client = llm(http, server.url)
            assert (await client.complete("s", "u")).content == "ok"
            assert (await client.complete("s", "u")).content == "ok"
    assert server.accepted == 1


@pytest.mark.parametrize(("encoding", "body"), [("br", b"\x1b\x00"), ("gzip", b"not gzip at all")])
async def test_undecodable_bodies_are_bad_responses(http: H11Client, encoding: str, body: bytes) -> None:
    async def broken(peer: Peer) -> None:
        await peer.read_request()
        await peer.respond(body=body, headers=[("content-encoding", encoding)])

    with trio.fail_after(5):
        async with raw_server(broken) as server:
            with pytest.raises(LlmBadResponse, match="could not be decoded"):
                await llm(http, server.url).complete("s", "u")


async def test_the_request_on_the_wire() -> None:
    seen: list[h11.Request] = []

    async def record(peer: Peer) -> None:
        request = await peer.read_request()
        assert request is not None
        seen.append(request)
        await peer.respond()

    with trio.fail_after(5):
        async with raw_server(record) as server, H11Client(1) as http:
            async with http.stream(Endpoint.from_url(server.url + "/v1/chat/completions?x=1"),
                                   [(b"x-test", b"1")], b'{"a": 1}') as response:
                assert response.status == 200
                assert await response.read_up_to(10_000) == (OK_BODY, False)
    request = seen[0]
    headers = dict(request.headers)
    assert request.method == b"POST" and request.target == b"/v1/chat/completions?x=1"
    assert headers[b"host"] == server.url.removeprefix("http://").encode()
    assert headers[b"content-length"] == b"8" and headers[b"x-test"] == b"1"


# --- the pool ---------------------------------------------------------------------------------


async def test_the_pool_is_bounded_by_its_size() -> None:
    release = trio.Event()

    async def slow(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await release.wait()
            await peer.respond()

    answered = 0
    with trio.fail_after(10):
        async with raw_server(slow) as server, H11Client(2) as http:
            async def call() -> None:
                nonlocal answered
                async with http.stream(endpoint(server), [], b"{}") as response:
                    await response.read_up_to(100_000)
                    answered += 1

            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(call)
                await trio.testing.wait_all_tasks_blocked()
                assert server.open == 2 and http.statistics().connections == 2
                release.set()
            assert http.statistics() == H11ClientStatistics(connections=2, idle=2, connects=2)
    assert answered == 6 and server.accepted == 2 and server.max_open == 2


async def test_idle_connections_are_reused_last_in_first_out() -> None:
    release = trio.Event()
    served_by: list[int] = []

    async def tag(peer: Peer) -> None:
        while await peer.read_request() is not None:
            served_by.append(peer.index)
            if peer.index == 0 and not release.is_set():
                await release.wait()                         # connection 0 finishes last
            await peer.respond()

    with trio.fail_after(10):
        async with raw_server(tag) as server, H11Client(2) as http:
            async def call() -> None:
                async with http.stream(endpoint(server), [], b"{}") as response:
                    await response.read_up_to(100_000)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(call)
                await trio.testing.wait_all_tasks_blocked()
                assert http.statistics().idle == 1           # connection 1 is back in the pool
                release.set()
            await call()
    assert served_by == [0, 1, 0]                            # 0 was released last, so used first


async def test_cancellation_leaves_no_connection_behind(http: H11Client) -> None:
    arrived = trio.Event()

    async def hang(peer: Peer) -> None:
        await peer.read_request()
        arrived.set()
        await peer.read_request()                            # returns None when the client closes

    with trio.fail_after(10):
        async with raw_server(hang) as server:
            client = llm(http, server.url)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.complete, "s", "u")
                await arrived.wait()
                assert http.statistics().connections == 1
                nursery.cancel_scope.cancel()
            assert http.statistics() == H11ClientStatistics(connections=0, idle=0, connects=1)
            await server.closed.wait()                       # the server saw the connection close
            assert server.open == 0


async def test_cancellation_while_waiting_for_a_connection_slot() -> None:
    arrived = trio.Event()

    async def hang(peer: Peer) -> None:
        await peer.read_request()
        arrived.set()
        await peer.read_request()

    with trio.fail_after(10):
        async with raw_server(hang) as server, H11Client(1) as http:
            async def call() -> None:
                async with http.stream(endpoint(server), [], b"{}"):
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                await arrived.wait()
                nursery.start_soon(call)                     # waits: the only slot is taken
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
            assert http.statistics() == H11ClientStatistics(connections=0, idle=0, connects=1)


async def test_a_closed_client_starts_no_request_and_closes_its_connections() -> None:
    with trio.fail_after(10):
        async with raw_server() as server:
            async with H11Client(2) as http:
                async with http.stream(endpoint(server), [], b"{}") as response:
                    await response.read_up_to(100_000)
                assert http.statistics().idle == 1
            assert http.statistics() == H11ClientStatistics(connections=0, idle=0, connects=1)
            await server.closed.wait()
            with pytest.raises(RuntimeError, match="closed"):
                async with http.stream(endpoint(server), [], b"{}"):
                    pass


async def test_the_connect_timeout_bounds_a_connect_that_hangs() -> None:
    """A listener whose backlog is full drops SYNs: the connect hangs until the timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):                               # fill the accept queue
                filler = socket.socket()
                filler.setblocking(False)
                try:
                    filler.connect(("127.0.0.1", port))
                except BlockingIOError:
                    pass
                fillers.append(filler)
            with trio.fail_after(10):
                async with H11Client(1, connect_timeout_s=0.3) as http:
                    started = trio.current_time()
                    with pytest.raises(httpx.ConnectTimeout):
                        async with http.stream(Endpoint.from_url(f"http://127.0.0.1:{port}/"), [], b""):
                            pass
                    assert 0.3 <= trio.current_time() - started < 2
                    assert http.statistics().connections == 0
        finally:
            for filler in fillers:
                filler.close()


def test_endpoints_are_parsed_once() -> None:
    assert Endpoint.from_url("http://llm:3020/v1/chat/completions") == Endpoint(
        "http", "llm", 3020, b"/v1/chat/completions", b"llm:3020")
    assert Endpoint.from_url("HTTPS://LLM.example/x?y=1#frag") == Endpoint(
        "https", "llm.example", 443, b"/x?y=1", b"llm.example")
    assert Endpoint.from_url("http://[::1]:80") == Endpoint("http", "::1", 80, b"/", b"[::1]")
    for bad in ("ftp://host/", "http:///path", "llm:3020", "http://llm/a b", "http://llm:99999/", "http://llä/"):
        with pytest.raises(ValueError):
            Endpoint.from_url(bad)
    for bad_client in (partial(H11Client, 0), partial(H11Client, 1, connect_timeout_s=0.0),
                       partial(H11Client, 1, read_timeout_s=float("nan")), partial(H11Client, 1, keepalive_s=-1.0)):
        with pytest.raises(ValueError):
            bad_client()


# --- TLS --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    server: ssl.SSLContext
    client: ssl.SSLContext  # trusts the test's CA only


def make_certificates(tmp_path: Path) -> Certificates:
    """A CA and a certificate for localhost/127.0.0.1 signed by it, made for this test."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mana-ai test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    chain = tmp_path / "server.pem"
    chain.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()) + leaf.public_bytes(serialization.Encoding.PEM))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(chain)
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return Certificates(server, client)


async def test_https_goes_over_tls_with_keep_alive(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    with trio.fail_after(10):
        async with raw_server(tls=certs.server) as server, H11Client(2, ssl_context=certs.client) as http:
            assert server.url.startswith("https://localhost:")
            client = llm(http, server.url)
            results = [await client.complete("s", "u") for _ in range(3)]
    assert all(isinstance(r, Completion) and r.content == "ok" for r in results)
    assert server.accepted == 1 and server.requests == 3


async def test_an_untrusted_certificate_is_unavailable(tmp_path: Path) -> None:
    """The default trust (httpx's: certifi) does not know the test's CA: the handshake fails
    and nothing is sent."""
    certs = make_certificates(tmp_path)
    seen = Seen()
    with trio.fail_after(10):
        async with raw_server(tls=certs.server) as server, H11Client(2) as http:
            with pytest.raises(LlmUnavailable) as caught:
                await llm(http, server.url, seen, retries=0).complete("s", "u")
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert "TLS handshake failed" in str(caught.value) and "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert server.requests == 0 and http.statistics().connections == 0
