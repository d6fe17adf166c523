"""Raw-socket HTTP probes that break the protocol, for the HTTP front's fault tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import trio
from hypercorn.config import Config
from quart_trio import QuartTrio

from http_api.server import RestartPolicy, hypercorn_config, serve_http
from observability.metrics import Metrics

# hypercorn#203's race hits about one malformed request in four (trio's scheduling order picks
# it): 40 of them all miss it with a probability below 1e-5
PROBES = 40

# valid headers, then a chunk size that is not hex: h11 fails mid-body (hypercorn#203)
BAD_CHUNK_BODY = b"zz\r\nhello\r\n0\r\n\r\n"


def bad_chunked_request(path: str, method: str = "POST") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: application/json\r\n\r\n").encode() + BAD_CHUNK_BODY


def split_url(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[-1].rsplit(":", 1)
    return host.strip("[]"), int(port)


async def send_bad_chunked(url: str, path: str, *, timeout_s: float = 2.0) -> bytes:
    """Send one malformed chunked request; what the server answered before it hung up.

    b"" when the server closed (or reset) the connection without an answer.
    """
    host, port = split_url(url)
    received = b""
    with trio.move_on_after(timeout_s):
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            return b""  # the server is (re)starting: refused
        async with stream:
            try:
                await stream.send_all(bad_chunked_request(path))
                while chunk := await stream.receive_some():
                    received += chunk
            except trio.BrokenResourceError:  # reset by the server
                pass
    return received


async def status_of(url: str, path: str = "/health", *, timeout_s: float = 5.0) -> int | None:
    """The status of one plain GET on a fresh connection; None if the server did not answer."""
    host, port = split_url(url)
    received = b""
    with trio.move_on_after(timeout_s):
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            return None
        async with stream:
            try:
                await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
                while not _complete(received) and (chunk := await stream.receive_some()):
                    received += chunk
            except trio.BrokenResourceError:
                return None
    if not _complete(received):
        return None
    return int(received[9:12])


def _complete(response: bytes) -> bool:
    """A whole HTTP/1.1 response with a content-length (we read no further than that)."""
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.1 "):
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def tiny_app() -> QuartTrio:
    """GET /ping, and POST /tick answering without reading its body (as the daemon's tick)."""
    app = QuartTrio("tiny")

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    @app.post("/tick")
    async def tick() -> str:
        return "ticked"

    return app


def tiny_config(*, max_requests: int | None = None) -> Config:
    config = hypercorn_config("127.0.0.1", 0, graceful_timeout_s=0.2)
    config.max_requests = max_requests  # hypercorn's serve returns after this many requests
    return config


@asynccontextmanager
async def serving_front(app: QuartTrio, config: Config, metrics: Metrics | None = None,
                        restart: RestartPolicy = RestartPolicy()) -> AsyncIterator[str]:
    """`serve_http` for the block; yields its URL. Leaving the block shuts it down (bounded)."""
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        url = (await nursery.start(partial(serve_http, app, config, shutdown.wait, metrics=metrics,
                                           restart=restart)))[0]
        try:
            yield url
        finally:
            shutdown.set()
            nursery.cancel_scope.deadline = trio.current_time() + 5  # a hung shutdown fails the test


async def bad_chunked_until(url: str, done: Callable[[], bool], paths: tuple[str, ...] = ("/tick", "/nowhere"),
                            *, probes: int = PROBES) -> int:
    """Malformed chunked requests until `done()`; how many were sent (at most `probes`)."""
    for sent in range(1, probes + 1):
        await send_bad_chunked(url, paths[sent % len(paths)])
        if done():
            return sent
    return probes


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"service": "mana-ai", **labels}) or 0.0
