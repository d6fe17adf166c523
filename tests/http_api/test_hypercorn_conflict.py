"""hypercorn#203 (http_api/_hypercorn_fix.py, fix 2): a broken request ends only its connection.

If `test_203_reproduces_without_the_fixes` starts failing after an upgrade, upstream fixed the
bug and the `BusyResourceError` branch of `_protocol_send` can go (keep the `run` boundary).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import hypercorn.trio.tcp_server as tcp_server
import pytest
import trio
from hypercorn.trio import serve

from actors.groups import leaves
from front_probes import (PROBES, bad_chunked_until, sample, send_bad_chunked, serving_front, status_of, tiny_app,
                          tiny_config)
from http_api import _hypercorn_fix
from observability.metrics import Metrics

ERRORS = "mana_ai_http_connection_errors_total"


@contextmanager
def without_fixes(*, keep_run_boundary: bool = False) -> Iterator[None]:
    """hypercorn's own `protocol_send` (and `run`) for the block."""
    tcp_server.TCPServer.protocol_send = _hypercorn_fix.ORIGINAL_PROTOCOL_SEND  # type: ignore[method-assign,assignment]
    if not keep_run_boundary:
        tcp_server.TCPServer.run = _hypercorn_fix.ORIGINAL_RUN  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        _hypercorn_fix.apply()
    assert _hypercorn_fix.applied()


async def test_malformed_chunked_requests_end_only_their_connection(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    with caplog.at_level(logging.DEBUG, logger="http_api._hypercorn_fix"), trio.fail_after(30):
        async with serving_front(tiny_app(), tiny_config(), metrics) as url:
            for path in ("/tick", "/nowhere", "/ping"):
                answer = await send_bad_chunked(url, path)
                assert answer == b"" or answer.startswith(b"HTTP/1.1 "), answer
            sent = await bad_chunked_until(url, lambda: sample(metrics, ERRORS, kind="send-conflict") >= 1)
            assert await status_of(url, "/ping") == 200
    # the race of #203 happened and was handled as a close
    assert sample(metrics, ERRORS, kind="send-conflict") >= 1, f"no race in {sent} probes"
    assert sample(metrics, ERRORS, kind="unexpected") == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_203_reproduces_without_the_fixes() -> None:
    config = tiny_config()
    crashed: list[BaseException] = []
    with without_fixes(), trio.fail_after(30):
        try:
            async with trio.open_nursery() as nursery:
                url = (await nursery.start(partial(serve, tiny_app(), config)))[0]
                await bad_chunked_until(url, lambda: False)
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # serve failed: the body was cancelled with it
            crashed = leaves(group)
    assert any(isinstance(e, trio.BusyResourceError) for e in crashed), \
        f"hypercorn survived {PROBES} malformed requests: upstream fixed #203, drop fix 2"


async def test_the_run_boundary_keeps_an_escaped_error_in_its_connection(
        caplog: pytest.LogCaptureFixture) -> None:
    """hypercorn's `protocol_send` (so the race escapes it), our boundary around `run`."""
    metrics = Metrics()
    with without_fixes(keep_run_boundary=True), caplog.at_level(logging.WARNING), trio.fail_after(30):
        async with serving_front(tiny_app(), tiny_config(), metrics) as url:
            await bad_chunked_until(url, lambda: sample(metrics, ERRORS, kind="unexpected") >= 1)
            assert await status_of(url, "/ping") == 200
    assert sample(metrics, ERRORS, kind="unexpected") >= 1
    assert sample(metrics, "mana_ai_http_front_restarts_total") == 0  # the front itself never failed
    failed = [r for r in caplog.records if r.getMessage() == "http.connection_failed"]
    assert failed, [r.getMessage() for r in caplog.records]
    record = failed[0]
    assert record.levelno == logging.WARNING
    assert vars(record)["error"] == "BusyResourceError"
    assert vars(record)["where"].startswith("tcp_server.py:"), vars(record)["where"]
    assert vars(record)["client"] == "127.0.0.1"
    assert record.exc_info is None and "zz" not in repr(vars(record))  # no request bytes in the log


def test_every_connection_error_kind_is_exported_at_zero() -> None:
    metrics = Metrics()
    for kind in _hypercorn_fix.CONNECTION_ERROR_KINDS:
        assert metrics.registry.get_sample_value(ERRORS, {"service": "mana-ai", "kind": kind}) == 0.0
