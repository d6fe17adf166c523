"""Shield hypercorn's idle-timer restart and close from quart-trio's disconnect cancel.

hypercorn 0.18 (trio worker) + quart-trio 0.12: when a response ends, quart-trio cancels
the request nursery on `http.disconnect` while hypercorn is still restarting the keep-alive
timer or closing the stream in `protocol_send`. Both get cancelled, so idle keep-alive
connections never time out and shutdown waits the whole `graceful_timeout`
(stack-notes §4.3). tests/http_api/test_hypercorn_fix.py reproduces the bug without this
patch; re-run it on every hypercorn/quart-trio upgrade.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import hypercorn.trio.tcp_server as _tcp_server
import trio
from hypercorn.events import Closed, Event, Updated

ORIGINAL_PROTOCOL_SEND: Callable[[Any, Event], Awaitable[None]] = _tcp_server.TCPServer.protocol_send


async def _protocol_send(self: Any, event: Event) -> None:
    if isinstance(event, (Updated, Closed)):
        with trio.CancelScope(shield=True):
            return await ORIGINAL_PROTOCOL_SEND(self, event)
    return await ORIGINAL_PROTOCOL_SEND(self, event)


def apply() -> None:
    _tcp_server.TCPServer.protocol_send = _protocol_send  # type: ignore[method-assign]


def applied() -> bool:
    return _tcp_server.TCPServer.protocol_send is _protocol_send


apply()
