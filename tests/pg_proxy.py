"""A TCP front for the test Postgres (which listens on a Unix socket only) that can fail over.

    async with pg_tcp_proxy(db_dsn) as proxy:
        proxy.dsn            # the same database over TCP on 127.0.0.1
        proxy.cut()          # drop every open connection, as a Postgres restart does
        proxy.refusing = True  # accept new connections and close them at once (no server yet)
        proxy.stalled = True   # open connections stay open, nothing gets through
        proxy.drop_sent = b"x"   # cut a connection as it sends bytes holding b"x" (they never arrive)
        proxy.drop_reply = b"x"  # cut a connection as the server answers with b"x" (the statement
                                 # ran; its answer, the acknowledgement, is lost)

Over TCP asyncpg first asks for SSL (sslmode=prefer); a connection closed at that moment is
the "unexpected connection_lost() call" path that a real failover takes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import parse_qs, urlsplit, urlunsplit

import trio


@dataclass
class PgProxy:
    dsn: str
    refusing: bool = False
    stalled: bool = False  # hold every byte in both directions (a hung network or server)
    accepted: int = 0
    drop_sent: bytes | None = None
    drop_reply: bytes | None = None
    dropped: int = 0  # connections cut by `drop_sent` / `drop_reply`
    _live: set[trio.CancelScope] = field(default_factory=set)

    def cut(self) -> None:
        for scope in list(self._live):
            scope.cancel()


async def _pump(proxy: PgProxy, source: trio.abc.ReceiveStream, sink: trio.abc.SendStream, *,
                replies: bool) -> None:
    async for chunk in source:
        while proxy.stalled:
            await trio.sleep(0.01)
        marker = proxy.drop_reply if replies else proxy.drop_sent
        if marker is not None and marker in chunk:
            proxy.dropped += 1
            raise trio.BrokenResourceError("cut by the test proxy")
        await sink.send_all(chunk)


async def _handle(proxy: PgProxy, socket_path: str, client: trio.SocketStream) -> None:
    proxy.accepted += 1
    async with client:
        if proxy.refusing:
            return
        with trio.CancelScope() as scope:
            proxy._live.add(scope)
            try:
                async with await trio.open_unix_socket(socket_path) as server, trio.open_nursery() as n:
                    n.start_soon(partial(_pump, proxy, client, server, replies=False))
                    await _pump(proxy, server, client, replies=True)
                    n.cancel_scope.cancel()
            except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # either side went away: so does the other
            finally:
                proxy._live.discard(scope)


@asynccontextmanager
async def pg_tcp_proxy(unix_dsn: str) -> AsyncIterator[PgProxy]:
    parts = urlsplit(unix_dsn)
    query = parse_qs(parts.query)
    socket_path = f"{query['host'][0]}/.s.PGSQL.{query.get('port', ['5432'])[0]}"
    proxy = PgProxy("")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, partial(_handle, proxy, socket_path), 0,
                                                host="127.0.0.1", backlog=128))
        port = listeners[0].socket.getsockname()[1]
        proxy.dsn = urlunsplit((parts.scheme, f"{parts.username or 'postgres'}@127.0.0.1:{port}", parts.path, "", ""))
        try:
            yield proxy
        finally:
            proxy.cut()
            nursery.cancel_scope.cancel()
