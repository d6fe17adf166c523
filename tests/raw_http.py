"""A raw HTTP/1.1 server on loopback (trio + h11) that can misbehave on purpose.

    async with raw_server(handler) as server:     # handler(peer) serves one connection
        ...                                       # server.url, server.requests, server.peers

Unlike tests/fake_llm.py (Quart-Trio, always well-behaved HTTP) a handler here decides what
happens on the wire: close an idle connection, reset it (RST) after reading a request, send
garbage or a status line cut short.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import h11
import trio

from fake_llm import completion

__all__ = ["OK_BODY", "Handler", "Peer", "RawServer", "answer_all", "raw_server"]

OK_BODY = json.dumps(completion("ok").body).encode()


class Peer:
    """The server's side of one connection."""

    def __init__(self, stream: trio.abc.Stream, socket_: trio.socket.SocketType, index: int) -> None:
        self.stream = stream
        self.socket = socket_
        self.index = index  # 0 for the first connection the server accepted
        self.h11 = h11.Connection(h11.SERVER)
        self.served = 0  # requests read on this connection
        self.body = b""  # the body of the last request read

    async def read_request(self) -> h11.Request | None:
        """The next request (its body in ``self.body``); None once the client closed."""
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return None
                self.h11.receive_data(bytes(data))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.served += 1
                self.body = bytes(body)
                return request
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def respond(self, status: int = 200, body: bytes = OK_BODY,
                      headers: list[tuple[str, str]] | None = None) -> None:
        headers = [("content-type", "application/json"), *(headers or [])]
        if not any(name.lower() in ("content-length", "transfer-encoding") for name, _ in headers):
            headers.append(("content-length", str(len(body))))
        data = self.h11.send(h11.Response(status_code=status, headers=headers))
        data = (data or b"") + (self.h11.send(h11.Data(data=body)) or b"") + (self.h11.send(h11.EndOfMessage()) or b"")
        await self.stream.send_all(data)
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    def reset(self) -> None:
        """Close with an RST (SO_LINGER 0), as a crashed peer or a middlebox does."""
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.socket.close()


Handler = Callable[[Peer], Awaitable[None]]


async def answer_all(peer: Peer) -> None:
    """The well-behaved server: every request gets the completion, keep-alive."""
    while await peer.read_request() is not None:
        await peer.respond()


@dataclass
class RawServer:
    url: str = ""
    accepted: int = 0
    open: int = 0
    max_open: int = 0
    requests: int = 0  # requests read, over all connections
    peers: list[Peer] = field(default_factory=list)
    closed: trio.Event = field(default_factory=trio.Event)  # some connection ended (server side)


@asynccontextmanager
async def raw_server(handler: Handler = answer_all, *,
                     tls: ssl.SSLContext | None = None) -> AsyncIterator[RawServer]:
    server = RawServer()

    async def serve(stream: trio.SocketStream) -> None:
        socket_ = stream.socket
        wrapped: trio.abc.Stream = stream
        if tls is not None:
            wrapped = trio.SSLStream(stream, tls, server_side=True, https_compatible=True)
        peer = Peer(wrapped, socket_, server.accepted)
        server.accepted += 1
        server.open += 1
        server.max_open = max(server.max_open, server.open)
        server.peers.append(peer)
        original = peer.read_request

        async def counted() -> h11.Request | None:
            request = await original()
            server.requests += request is not None
            return request

        peer.read_request = counted  # type: ignore[method-assign]
        try:
            await handler(peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            server.open -= 1
            socket_.close()
            server.closed.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        server.url = f"{'https' if tls else 'http'}://{'localhost' if tls else '127.0.0.1'}:{port}"
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
