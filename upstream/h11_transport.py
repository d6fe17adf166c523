"""A lean HTTP/1.1 client for the one hot-path call (the LLM): h11 over trio streams.

    async with H11Client(max_connections=8) as http:
        endpoint = Endpoint.from_url("https://llm.example/v1/chat/completions")
        async with http.stream(endpoint, headers, body) as response:   # one POST
            body, more = await response.read_up_to(1_048_576)

Why not httpx here: per call, httpx as we used it spent three to four times the CPU of this
module, and even httpcore alone two to three times (request and response models, header
merging, a pool that re-checks every connection, polling the idle ones, whenever a request
comes or goes); bench/llm_client_cpu.py and docs/architecture.md have the figures. httpx stays
for every other outbound call.

What it does, and no more: POST with a body, a keep-alive pool bounded to ``max_connections``
(idle connections reused last-in first-out, per origin), a connect timeout and a read timeout
(the longest wait on the socket, either way); the caller's ``trio.fail_after`` bounds the
whole exchange. A request is sent once: a pooled connection is replaced for free only when it is
known dead before a byte of the request is written (the server closed it while idle, so the
socket is readable: a zero-timeout check just before the write). Once the request is written,
any failure is the caller's error, even on a pooled connection that the server dropped before
answering: the server may have read the request and be doing the work, so only the caller may
decide to send it again (LlmClient counts that as a try). A connection is reused only after a
complete exchange: on an error, a cancellation, a body not read to the end or
``Connection: close`` it is closed. gzip and deflate bodies are decoded (the cap applies to the
decoded bytes). https goes through ``trio.SSLStream`` on the same path, trusting what httpx
trusts by default (``httpx.create_ssl_context()``).

Errors are httpx's own transport exceptions, so callers map them as they did before::

    httpx.TransportError
    ├── httpx.ConnectError / ConnectTimeout   no connection (refused, DNS, TLS handshake)
    ├── httpx.WriteError / WriteTimeout       the request could not be sent
    ├── httpx.ReadError / ReadTimeout         the socket failed or stayed silent while reading
    └── httpx.RemoteProtocolError             not HTTP/1.1 (garbage), or closed mid-message
    httpx.DecodingError                       a gzip/deflate body that does not inflate

Closing the client (leaving ``async with``) closes idle connections at once and the others when
their exchange ends; a request on a closed client raises ``RuntimeError``, as httpx does.
"""

from __future__ import annotations

import math
import ssl
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

import h11
import httpx
import trio

__all__ = ["Endpoint", "H11Client", "H11ClientStatistics", "H11Response", "Timeouts"]

_RECEIVE_BYTES = 65536
_USER_AGENT = b"mana-ai"
_STREAM_ERRORS = (trio.BrokenResourceError, OSError)


@dataclass(frozen=True)
class Timeouts:
    """``connect``: to open a connection (TLS handshake included); ``read``: the longest wait for
    the socket to give or take bytes. The whole exchange is bounded by the caller."""

    connect: float
    read: float


@dataclass(frozen=True)
class H11ClientStatistics:
    connections: int  # open: idle, in use or connecting
    idle: int
    connects: int  # connections opened since the client was created


@dataclass(frozen=True)
class Endpoint:
    """Where a request goes, parsed once: the origin and the request target."""

    scheme: str  # "http" | "https"
    host: str
    port: int
    target: bytes  # path and query, as sent on the request line
    host_header: bytes

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """An http(s) URL; userinfo is never sent (settings refuse it) and the fragment is dropped."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL with a host: {parts.scheme}://{parts.hostname or ''}")
        default_port = 443 if scheme == "https" else 80
        port = parts.port or default_port
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default_port else f"{shown}:{port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        endpoint = cls(scheme, host, port, target.encode("ascii"), host_header.encode("ascii"))
        try:  # what h11 would refuse on every request (a space in the path, say) is refused now
            h11.Request(method=b"POST", target=endpoint.target, headers=[(b"host", endpoint.host_header)])
        except h11.LocalProtocolError as exc:
            raise ValueError(f"not a valid request target: {exc}") from exc
        return endpoint

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


class _Connection:
    """One socket (TLS or not) and its h11 state machine."""

    __slots__ = ("origin", "stream", "socket", "h11", "idle_since")

    def __init__(self, origin: tuple[str, str, int], stream: trio.abc.Stream, socket: trio.socket.SocketType) -> None:
        self.origin = origin
        self.stream = stream
        self.socket = socket  # the TCP socket under any TLS, for is_readable and close
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0

    def start_next_cycle(self) -> bool:
        """Ready the connection for another request; False if it cannot take one.

        Bytes that came after the response (a server's 408 before closing, say) would be read
        as the answer to the next request: such a connection is not reused.
        """
        data, closed = self.h11.trailing_data
        if data or closed:
            return False
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False

    def close(self) -> None:
        """Synchronous and final: no TLS close_notify, the socket just closes."""
        self.socket.close()


class H11Client:
    """A keep-alive pool of at most ``max_connections`` HTTP/1.1 connections; see the module doc."""

    def __init__(self, max_connections: int, *, connect_timeout_s: float = 5.0, read_timeout_s: float = 120.0,
                 keepalive_s: float = 30.0, ssl_context: ssl.SSLContext | None = None) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        for name, value in (("connect_timeout_s", connect_timeout_s), ("read_timeout_s", read_timeout_s),
                            ("keepalive_s", keepalive_s)):
            if not value > 0:  # NaN too
                raise ValueError(f"{name} must be > 0, got {value}")
        self.timeout = Timeouts(connect=connect_timeout_s, read=read_timeout_s)
        self._max = max_connections
        self._keepalive_s = keepalive_s
        self._ssl_context = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open = 0  # idle + in use + connecting
        self._connects = 0
        self._waiters = trio.lowlevel.ParkingLot()  # callers waiting for a connection slot
        self._closed = False

    async def __aenter__(self) -> H11Client:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close idle connections now and the others as their exchanges end; start no request."""
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                self._discard(conn)
            idle.clear()
        self._waiters.unpark_all()

    def statistics(self) -> H11ClientStatistics:
        return H11ClientStatistics(self._open, sum(map(len, self._idle.values())), self._connects)

    def stream(self, endpoint: Endpoint, headers: Sequence[tuple[bytes, bytes]], body: bytes, *,
               read_timeout_s: float | None = None) -> _Exchange:
        """POST ``body``; ``async with`` it for the response (status and headers read, body not).

        ``read_timeout_s`` replaces the client's read timeout for this request.
        """
        return _Exchange(self, endpoint, headers, body, self.timeout.read if read_timeout_s is None else read_timeout_s)

    # --- the pool ---------------------------------------------------------------------------

    async def _acquire(self, endpoint: Endpoint) -> _Connection:
        """A connection to the endpoint's origin: a pooled one still alive, else a new one.

        No checkpoint lies between the checks of a pooled connection here and the write of the
        request, so "not readable" is as fresh as it can be: the server's close that came while
        idle is seen, only one that crosses the request is not (and then that try counts).
        """
        origin = endpoint.origin
        while True:
            if self._closed:
                raise RuntimeError("Cannot send a request, as the client has been closed.")
            idle = self._idle.get(origin)
            if idle:
                now = trio.current_time()
                while idle:
                    conn = idle.pop()                                 # the most recently used
                    if now - conn.idle_since < self._keepalive_s and not conn.socket.is_readable():
                        return conn
                    self._discard(conn)                               # expired, or closed by the server
            if self._open < self._max:
                self._open += 1
                try:
                    return await self._connect(endpoint)
                except BaseException:
                    self._open -= 1
                    self._waiters.unpark()
                    raise
            if not self._close_one_idle():
                await self._waiters.park()                            # all busy: wait for a release

    def _close_one_idle(self) -> bool:
        """Make room for a new connection by closing the oldest idle one of some origin."""
        for idle in self._idle.values():
            if idle:
                self._discard(idle.pop(0))
                return True
        return False

    def _release(self, conn: _Connection, reusable: bool) -> None:
        if reusable and not self._closed:
            conn.idle_since = trio.current_time()
            self._idle.setdefault(conn.origin, []).append(conn)
        else:
            self._discard(conn)
        self._waiters.unpark()

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._open -= 1

    async def _connect(self, endpoint: Endpoint) -> _Connection:
        with trio.move_on_after(self.timeout.connect) as connecting:
            try:
                tcp = await trio.open_tcp_stream(endpoint.host, endpoint.port)
            except OSError as exc:
                raise httpx.ConnectError(_describe(exc)) from exc
            stream: trio.abc.Stream = tcp
            if endpoint.scheme == "https":
                stream = trio.SSLStream(tcp, self._tls_context(), server_hostname=endpoint.host,
                                        https_compatible=True)
                try:
                    await stream.do_handshake()
                except BaseException as exc:
                    tcp.socket.close()
                    if isinstance(exc, (*_STREAM_ERRORS, ssl.SSLError)):
                        raise httpx.ConnectError(f"TLS handshake failed: {_describe(exc)}") from exc
                    raise
            self._connects += 1
            return _Connection(endpoint.origin, stream, tcp.socket)
        # cut off by the connect timeout: trio closed the half-open socket, the handler above ours
        assert connecting.cancelled_caught
        raise httpx.ConnectTimeout(f"no connection within {self.timeout.connect:g}s")

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:                   # built once, on the first https connect
            context = httpx.create_ssl_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return self._ssl_context


class _Exchange:
    """One request: ``__aenter__`` sends it and reads the status line and headers."""

    def __init__(self, client: H11Client, endpoint: Endpoint, headers: Sequence[tuple[bytes, bytes]],
                 body: bytes, read_s: float) -> None:
        self._client = client
        self._read_s = read_s
        self._endpoint = endpoint
        self._headers = [(b"host", endpoint.host_header), (b"user-agent", _USER_AGENT), *headers,
                         (b"content-length", str(len(body)).encode())]
        self._body = body
        self._response: H11Response | None = None

    async def __aenter__(self) -> H11Response:
        """Sent once, never again: see the module doc."""
        client = self._client
        conn = await client._acquire(self._endpoint)
        response = H11Response(conn, self._read_s)
        try:
            await response._send(self._endpoint.target, self._headers, self._body)
            await response._read_head()
        except BaseException:
            client._release(conn, reusable=False)
            raise
        self._response = response
        return response

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        response = self._response
        if response is not None:
            self._client._release(response._conn, exc is None and response._complete
                                  and response._conn.start_next_cycle())


class H11Response:
    """Status and headers of a response whose body is still on the wire."""

    def __init__(self, conn: _Connection, read_s: float) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []  # names lower-cased by h11
        self._conn = conn
        self._read_s = read_s
        self._received = 0  # bytes of this response so far
        self._complete = False
        self._decoder: _Decoder | None = None

    def header(self, name: bytes) -> str | None:
        """The last value of a header (``name`` in lower case), or None."""
        found: bytes | None = None
        for key, value in self.headers:
            if key == name:
                found = value
        return None if found is None else found.decode("latin-1")

    @property
    def declared_length(self) -> int | None:
        value = self.header(b"content-length")
        return int(value) if value is not None and value.isascii() and value.isdigit() else None

    async def read_up_to(self, limit: int) -> tuple[bytes, bool]:
        """At most ``limit`` bytes of the decoded body, and whether there was more.

        With more, the rest is left unread and the connection is closed afterwards.
        """
        body = bytearray()
        while not self._complete:
            event = await self._next_event()
            if type(event) is h11.Data:
                if self._take(body, event.data, limit):
                    return bytes(body[:limit]), True
            elif type(event) is h11.EndOfMessage:
                self._complete = True
                if self._decoder is not None:
                    body += self._decoder.flush()                     # already inflated
        return bytes(body[:limit]), len(body) > limit

    def _take(self, body: bytearray, data: bytes, limit: int) -> bool:
        """Append (decoded) data; True once the body is over the limit."""
        if self._decoder is not None:
            data = self._decoder.decode(data, limit + 1 - len(body))
        body += data
        return len(body) > limit

    # --- the wire ---------------------------------------------------------------------------

    async def _send(self, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        h = self._conn.h11
        head = h.send(h11.Request(method=b"POST", target=target, headers=headers))
        data = h.send(h11.Data(data=body))
        end = h.send(h11.EndOfMessage())
        assert head is not None and data is not None and end is not None
        try:
            await self._send_all(head + data + end)
        except _STREAM_ERRORS as exc:
            raise httpx.WriteError(_describe(exc)) from exc

    async def _read_head(self) -> None:
        while True:
            event = await self._next_event()
            if type(event) is h11.Response:
                self.status = event.status_code
                self.headers = list(event.headers)
                self._decoder = _decoder_for(self.header(b"content-encoding"))
                return
            # an InformationalResponse (1xx) is skipped; h11 yields nothing else before the head

    async def _next_event(self) -> h11.Event:
        h = self._conn.h11
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(_describe(exc)) from exc
            if event is not h11.NEED_DATA:
                assert isinstance(event, h11.Event)  # PAUSED only comes after the whole response
                return event
            try:
                data = await self._receive_some()
            except _STREAM_ERRORS as exc:
                raise httpx.ReadError(_describe(exc)) from exc
            if not data and self._received == 0:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            self._received += len(data)
            h.receive_data(bytes(data))  # no copy when it is bytes already

    # Each wait on the socket is bounded by the read timeout, but without a cancel scope when
    # the caller's own deadline comes first (LlmClient's fail_after usually does): a scope costs
    # more CPU than all the rest of a wait's bookkeeping.

    def _read_deadline(self) -> float | None:
        deadline = trio.current_time() + self._read_s
        return None if deadline >= trio.current_effective_deadline() else deadline

    async def _send_all(self, data: bytes) -> None:
        deadline = self._read_deadline()
        if deadline is None:
            await self._conn.stream.send_all(data)
            return
        with trio.move_on_at(deadline):
            await self._conn.stream.send_all(data)
            return
        raise httpx.WriteTimeout(f"could not send the request within {self._read_s:g}s")

    async def _receive_some(self) -> bytes | bytearray:
        deadline = self._read_deadline()
        if deadline is None:
            return await self._conn.stream.receive_some(_RECEIVE_BYTES)
        with trio.move_on_at(deadline):
            return await self._conn.stream.receive_some(_RECEIVE_BYTES)
        raise httpx.ReadTimeout(f"the server sent nothing for {self._read_s:g}s")


def _describe(exc: BaseException) -> str:
    """The message, or that of its cause: trio's BrokenResourceError wraps the OSError or
    SSLError that says what happened (``[Errno 104] Connection reset by peer``)."""
    while not str(exc) and exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


# --- content decoding -----------------------------------------------------------------------


class _Decoder:
    """gzip or deflate (zlib-wrapped or raw, as httpx accepts), inflated at most ``room`` at a time."""

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._first = True
        self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)

    def decode(self, data: bytes, room: int) -> bytes:
        """Up to ``room`` (>= 1) inflated bytes; the caller stops once past its limit anyway."""
        first, self._first = self._first, False
        try:
            return self._inflate.decompress(data, room)
        except zlib.error as exc:
            if first and self._encoding == "deflate":                 # raw deflate, no zlib header
                self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.decode(data, room)
            raise httpx.DecodingError(f"{self._encoding}: {exc}") from exc

    def flush(self) -> bytes:
        try:
            return self._inflate.flush()
        except zlib.error as exc:  # pragma: no cover - flush raises only on internal errors
            raise httpx.DecodingError(f"{self._encoding}: {exc}") from exc


def _decoder_for(content_encoding: str | None) -> _Decoder | None:
    if content_encoding is None:
        return None
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return _Decoder("gzip")
    if encoding == "deflate":
        return _Decoder("deflate")
    raise httpx.DecodingError(f"unsupported content-encoding {content_encoding!r}")
