"""A counting proxy for the PostgreSQL wire protocol: database round trips, by statement.

    async with counting_pg_proxy(dsn) as proxy:   # dsn: a Unix-socket or TCP server
        proxy.dsn                                  # the same database through the proxy (TCP, no SSL)
        proxy.counts.snapshot()                    # what clients sent so far

It reads only what clients send (server replies are passed on untouched). A message that ends a
round trip is one after which the client must wait for the server before it can go on:

* `Q` (simple Query): asyncpg's `BEGIN;`/`COMMIT;` of a transaction, `execute()` without arguments;
* `S` (Sync): the end of an extended-protocol exchange (Parse/Bind/Describe/Execute … Sync),
  i.e. one `fetch`/`execute` with arguments, or the prepare of a statement new to a connection;
* the start-up packet, an SSL/GSSAPI request and `p` (password) messages: connection set-up.

Each is answered by one ReadyForQuery (or the one-byte SSL answer), so the count is the number of
times a client sat waiting on the database. A Sync is attributed to the first statement of its
exchange (by the name it has in `store/queries.sql` when it is one of ours).

Wire format: after the start-up phase every message is a type byte and an int32 length (which
counts itself, not the type byte). Start-up packets have no type byte: an int32 length, then an
int32 code (SSLRequest 80877103 and GSSENCRequest 80877104 are followed by another start-up packet).
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import parse_qs, urlsplit, urlunsplit

import trio

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CONNECT = "(connect)"
# statements asyncpg sends on its own
_DRIVER_STATEMENTS = [
    ("SELECT pg_advisory_unlock_all()", "(asyncpg: pool reset on release)"),
    ("WITH RECURSIVE typeinfo_tree", "(asyncpg: type introspection)"),
    ("SELECT current_setting('jit')", "(asyncpg: jit off/on around introspection)"),
    ("SELECT set_config('jit'", "(asyncpg: jit off/on around introspection)"),
]


@dataclass(frozen=True)
class RoundTrips:
    """Counts at one moment; subtract two to get what happened in between."""

    connections: int
    by_statement: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_statement.values())

    def __sub__(self, other: RoundTrips) -> RoundTrips:
        diff = Counter(self.by_statement)
        diff.subtract(other.by_statement)
        return RoundTrips(self.connections - other.connections, {k: v for k, v in diff.items() if v})


@dataclass
class Counts:
    connections: int = 0
    by_statement: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> RoundTrips:
        return RoundTrips(self.connections, dict(self.by_statement))


def _cstring(buf: bytes | bytearray, start: int) -> tuple[str, int]:
    end = buf.index(0, start)
    return bytes(buf[start:end]).decode("utf-8", "replace"), end + 1


class _ClientParser:
    """Splits one connection's client-to-server bytes into messages and counts round trips."""

    def __init__(self, counts: Counts, names: Mapping[str, str]) -> None:
        self._counts = counts
        self._names = names
        self._buf = bytearray()
        self._startup = True
        self._statements: dict[str, str] = {}  # prepared statement name -> label
        self._pending: str | None = None  # the first statement since the last Sync

    def _label(self, sql: str) -> str:
        text = sql.strip()
        named = self._names.get(text) or self._names.get(text.rstrip(";"))
        if named:
            return named
        flat = " ".join(text.split())
        for prefix, label in _DRIVER_STATEMENTS:
            if flat.startswith(prefix):
                return label
        return flat[:60]

    def feed(self, data: bytes | bytearray) -> None:
        self._buf += data
        at = 0
        while True:
            if self._startup:
                if len(self._buf) - at < 8:
                    break
                length, code = struct.unpack_from("!ii", self._buf, at)
                if len(self._buf) - at < length:
                    break
                at += length
                self._counts.by_statement[_CONNECT] += 1
                self._startup = code in (_SSL_REQUEST, _GSSENC_REQUEST)
                continue
            if len(self._buf) - at < 5:
                break
            kind = self._buf[at]
            (length,) = struct.unpack_from("!i", self._buf, at + 1)
            if len(self._buf) - at < 1 + length:
                break
            self._message(kind, self._buf[at + 5:at + 1 + length])
            at += 1 + length
        del self._buf[:at]

    def _message(self, kind: int, body: bytearray) -> None:
        if kind == ord("Q"):
            self._counts.by_statement[self._label(_cstring(body, 0)[0])] += 1
        elif kind == ord("P"):
            name, at = _cstring(body, 0)
            label = self._label(_cstring(body, at)[0])
            self._statements[name] = label
            self._pending = self._pending or label
        elif kind == ord("B"):
            statement = _cstring(body, _cstring(body, 0)[1])[0]
            self._pending = self._pending or self._statements.get(statement, "(unknown statement)")
        elif kind == ord("S"):
            self._counts.by_statement[self._pending or "(sync)"] += 1
            self._pending = None
        elif kind in (ord("p"), ord("F")):  # password / function call: both wait for an answer
            self._counts.by_statement[_CONNECT if kind == ord("p") else "(function call)"] += 1


async def _client_to_server(client: trio.SocketStream, server: trio.SocketStream, parser: _ClientParser,
                            done: trio.CancelScope) -> None:
    async for chunk in client:
        parser.feed(chunk)
        await server.send_all(chunk)
    done.cancel()  # the client hung up: close the server side too


async def _server_to_client(server: trio.SocketStream, client: trio.SocketStream, done: trio.CancelScope) -> None:
    async for chunk in server:
        await client.send_all(chunk)
    done.cancel()


@dataclass
class CountingProxy:
    dsn: str
    counts: Counts


async def _handle(upstream: tuple[str, str, int], counts: Counts, names: Mapping[str, str],
                  client: trio.SocketStream) -> None:
    counts.connections += 1
    kind, host, port = upstream
    async with client:
        try:
            with trio.fail_after(10):
                server: trio.SocketStream = (await trio.open_unix_socket(host) if kind == "unix"
                                             else await trio.open_tcp_stream(host, port))
            async with server, trio.open_nursery() as nursery:
                nursery.start_soon(_client_to_server, client, server, _ClientParser(counts, names),
                                   nursery.cancel_scope)
                nursery.start_soon(_server_to_client, server, client, nursery.cancel_scope)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # either side went away: the connection is over


def _upstream(dsn: str) -> tuple[str, str, int]:
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "localhost"])[0]
    port = int(query.get("port", [str(parts.port or 5432)])[0])
    if host.startswith("/"):
        return "unix", f"{host}/.s.PGSQL.{port}", port
    return "tcp", host, port


@asynccontextmanager
async def counting_pg_proxy(dsn: str, names: Mapping[str, str] | None = None) -> AsyncIterator[CountingProxy]:
    """A TCP proxy on 127.0.0.1 in front of `dsn`'s server; `names` maps SQL text to a label."""
    counts = Counts()
    parts = urlsplit(dsn)
    userinfo = parts.netloc.rpartition("@")[0]
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, partial(_handle, _upstream(dsn), counts, names or {}),
                                                0, host="127.0.0.1", backlog=4096))
        port = listeners[0].socket.getsockname()[1]
        netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
        # no SSL: the proxy must read the messages (and a local server has none anyway)
        yield CountingProxy(urlunsplit((parts.scheme, netloc, parts.path, "sslmode=disable", "")), counts)
        nursery.cancel_scope.cancel()
