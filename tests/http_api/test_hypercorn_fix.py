"""The hypercorn keep-alive fix (http_api/_hypercorn_fix.py): needed, and working.

If `test_bug_reproduces_without_the_fix` starts failing after an upgrade, upstream fixed
the bug and the patch can go.
"""

from __future__ import annotations

from functools import partial

import trio
from hypercorn.config import Config
from quart_trio import QuartTrio

import hypercorn.trio.tcp_server as tcp_server
from http_api import _hypercorn_fix
from http_api.server import serve_http

REQUEST = b"GET /ping HTTP/1.1\r\nHost: test\r\nConnection: keep-alive\r\n\r\n"


def tiny_app() -> QuartTrio:
    app = QuartTrio("tiny")

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    return app


async def idle_connection_closed_within(seconds: float) -> bool:
    """Serve, make one keep-alive request, then see whether the server hangs up in time."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.keep_alive_timeout = 0.5
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve_http, tiny_app(), config, shutdown.wait))
        host, port = binds[0].removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(REQUEST)
        received = b""
        while b"pong" not in received:
            received += await stream.receive_some()
        closed = False
        with trio.move_on_after(seconds):
            while await stream.receive_some():
                pass
            closed = True
        await stream.aclose()
        shutdown.set()
    return closed


async def test_idle_keep_alive_connection_times_out_with_the_fix() -> None:
    assert _hypercorn_fix.applied()
    assert await idle_connection_closed_within(2.5)


async def test_bug_reproduces_without_the_fix() -> None:
    tcp_server.TCPServer.protocol_send = _hypercorn_fix.ORIGINAL_PROTOCOL_SEND  # type: ignore[method-assign,assignment]
    try:
        assert not await idle_connection_closed_within(1.5), "upstream fixed it: drop _hypercorn_fix"
    finally:
        _hypercorn_fix.apply()
