"""Two fixes to hypercorn 0.18's trio connection task (`hypercorn/trio/tcp_server.py`).

Both are applied once, at import; tests/http_api/test_hypercorn_fix.py and
tests/http_api/test_hypercorn_conflict.py reproduce each bug without its fix. Re-run them on
every hypercorn/quart-trio upgrade and drop what upstream has fixed.

1. Keep-alive (hypercorn 0.18 + quart-trio 0.12; no upstream issue found). When a response
   ends, quart-trio cancels the request nursery on `http.disconnect` while hypercorn is still
   restarting the keep-alive timer or closing the stream in `protocol_send`. Both get
   cancelled, so idle keep-alive connections never time out and shutdown waits the whole
   `graceful_timeout`. Fix: shield `protocol_send` for `Updated`/`Closed`.

2. A request that breaks HTTP/1.1 mid-body takes the server down (pgjones/hypercorn#203).
   Text for upstream:

   What happens: a POST with `Transfer-Encoding: chunked` and an invalid chunk size (`zz\\r\\n`)
   makes `trio.BusyResourceError: another task is currently sending data on this SocketStream`
   escape `TCPServer.run`, which ends `serve()` (`worker_serve`'s server nursery), i.e. every
   connection and the process. It needs no app bug; it happens for roughly every second such
   request, depending on trio's scheduling order.
   Why: the headers start the app (task A). The bad chunk makes `H11Protocol._handle_events`
   (task B, the reader) send a 400 in two `RawData` writes (status line, then the empty
   `EndOfMessage`). Meanwhile A's response ends; h11 is in `ERROR`, so `_maybe_recycle` sends
   `Closed()` and `TCPServer._close()` calls `stream.send_eof()`. `_close()` does not take
   `send_lock`, and trio's `SocketStream.send_eof` holds the stream's send side across a
   checkpoint, so B's `send_all` meets it and raises `BusyResourceError`. `protocol_send`
   treats `BrokenResourceError`/`ClosedResourceError` as "connection gone" but not this one,
   and `run()` only catches `OSError`. (`_close()` already tolerates the mirror case, a
   `send_eof` meeting a `send_all`.)
   Minimal fix: in `TCPServer.protocol_send`, catch `trio.BusyResourceError` with the other two
   (`except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError)`):
   it can only mean `_close()` is ending the connection. (Taking `send_lock` in `_close()`
   would also do, but `protocol.handle(Closed())` can re-enter `protocol_send` under the lock.)

   Here the fix wraps `protocol_send` the same way, and a boundary around `TCPServer.run`
   keeps any other error of one connection in that connection: the connection is closed
   (trio's `serve_listeners` closes the stream), one `http.connection_failed` line is logged
   with the exception types and where they were raised (never messages: h11's carry request
   bytes), and `on_connection_error`, when set, counts it.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import hypercorn.trio.tcp_server as _tcp_server
import trio
from hypercorn.events import Closed, Event, RawData, Updated

from actors.groups import leaves

log = logging.getLogger(__name__)

ConnectionErrorKind = Literal["send-conflict", "unexpected"]
CONNECTION_ERROR_KINDS: tuple[ConnectionErrorKind, ...] = ("send-conflict", "unexpected")

# Set by `serve_http` for the connections it serves: trio tasks inherit the context of the task
# that spawned them, so every connection task of one `serve_http` call sees that call's counter
# (two servers in one process count separately; nothing global is mutated).
on_connection_error: ContextVar[Callable[[ConnectionErrorKind], None] | None] = ContextVar(
    "on_connection_error", default=None)

_TRIO_DIR = str(Path(trio.__file__).parent) + "/"
ORIGINAL_PROTOCOL_SEND: Callable[[Any, Event], Awaitable[None]] = _tcp_server.TCPServer.protocol_send
ORIGINAL_RUN: Callable[[Any], Awaitable[None]] = _tcp_server.TCPServer.run


def _count(kind: ConnectionErrorKind) -> None:
    counter = on_connection_error.get()
    if counter is not None:
        counter(kind)


async def _protocol_send(self: Any, event: Event) -> None:
    if isinstance(event, (Updated, Closed)):  # fix 1
        with trio.CancelScope(shield=True):
            return await ORIGINAL_PROTOCOL_SEND(self, event)
    try:
        return await ORIGINAL_PROTOCOL_SEND(self, event)
    except trio.BusyResourceError:  # fix 2: `_close()` is sending EOF in another task
        if not isinstance(event, RawData):
            raise
        log.debug("http.connection_send_conflict", extra={"client": _client(self)})
        _count("send-conflict")
        await self.protocol.handle(Closed())  # as hypercorn does for a peer that went away
        return None


async def _run(self: Any) -> None:
    """hypercorn's connection task; what fails in it ends this connection only."""
    try:
        await ORIGINAL_RUN(self)
    except Exception as exc:  # noqa: BLE001 - the per-connection boundary: log, count, go on
        _report(self, exc)
    except BaseExceptionGroup as group:  # errors beside a Cancelled/KeyboardInterrupt
        failed, rest = group.split(Exception)
        if failed is not None:
            _report(self, failed)
        assert rest is not None  # a group of Exceptions only is caught above
        raise rest from None


def _report(self: Any, exc: Exception) -> None:
    log.warning("http.connection_failed", extra={"client": _client(self), **describe_error(exc)})
    _count("unexpected")


def describe_error(exc: BaseException) -> dict[str, str]:
    """Exception types and where the first one was raised; no messages (they may hold request bytes)."""
    found = leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    frames = traceback.extract_tb(found[0].__traceback__)
    ours = [f for f in frames if not f.filename.startswith(_TRIO_DIR)] or frames  # the caller, not trio's guts
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno} {ours[-1].name}" if ours else "?"
    return {"error": ",".join(type(e).__name__ for e in found), "where": where}


def _client(self: Any) -> str:
    client = getattr(getattr(self, "protocol", None), "client", None)
    return str(client[0]) if client else "?"


def apply() -> None:
    _tcp_server.TCPServer.protocol_send = _protocol_send  # type: ignore[method-assign]
    _tcp_server.TCPServer.run = _run  # type: ignore[method-assign]


def applied() -> bool:
    return _tcp_server.TCPServer.protocol_send is _protocol_send and _tcp_server.TCPServer.run is _run


apply()
