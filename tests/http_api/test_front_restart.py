"""`serve_http` restarts hypercorn when it fails, on the same address, and still stops promptly.

Failures are real: hypercorn#203 with the fixes taken out, or hypercorn's own `max_requests`
(its `serve` returns after that many requests, which `serve_http` must treat as a failure).
"""

from __future__ import annotations

import gc
import logging
import socket
import warnings
from functools import partial

import pytest
import trio

from actors.groups import leaves
from front_probes import bad_chunked_until, sample, serving_front, status_of, tiny_app, tiny_config
from http_api.server import FrontFailed, RestartPolicy, serve_http
from observability.metrics import Metrics
from test_hypercorn_conflict import without_fixes

RESTARTS = "mana_ai_http_front_restarts_total"
QUICK = RestartPolicy(backoff_s=0.01, max_backoff_s=0.05)


async def wait_for_restarts(metrics: Metrics, count: int) -> None:
    while sample(metrics, RESTARTS) < count:
        await trio.sleep(0.01)


async def test_a_crashed_front_is_restarted_on_the_same_address(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    with without_fixes(), caplog.at_level(logging.WARNING, logger="http_api.server"), trio.fail_after(30):
        async with serving_front(tiny_app(), tiny_config(), metrics, QUICK) as url:
            await bad_chunked_until(url, lambda: sample(metrics, RESTARTS) >= 1)
            # the URL nursery.start handed back serves again (the last probe may have failed the
            # restarted front once more: then it is in its next backoff, and refuses for a moment)
            while await status_of(url, "/ping") != 200:
                await trio.sleep(0.01)
            stopping = trio.current_time()
        assert trio.current_time() - stopping < 1.5  # shutdown is not held up by the restarts
    restarted = [r for r in caplog.records if r.getMessage() == "http.front_restarted"]
    assert restarted and "BusyResourceError" in vars(restarted[0])["error"]
    assert "zz" not in repr(vars(restarted[0]))


async def test_a_serve_that_returns_is_restarted() -> None:
    metrics = Metrics()
    with trio.fail_after(10):
        async with serving_front(tiny_app(), tiny_config(max_requests=0), metrics, QUICK) as url:
            for restarts in range(1, 4):
                assert await status_of(url, "/ping") == 200  # the request that ends this serve
                await wait_for_restarts(metrics, restarts)
            assert await status_of(url, "/ping") == 200


async def test_shutdown_during_the_backoff_ends_serving_at_once() -> None:
    metrics = Metrics()
    slow = RestartPolicy(backoff_s=60)
    shutdown = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = (await nursery.start(partial(serve_http, tiny_app(), tiny_config(max_requests=0),
                                               shutdown.wait, metrics=metrics, restart=slow)))[0]
            assert await status_of(url, "/ping") == 200
            while await status_of(url, "/ping", timeout_s=1) is not None:  # serve returned: refused
                await trio.sleep(0.01)
            stopping = trio.current_time()
            shutdown.set()
        assert trio.current_time() - stopping < 1
    assert sample(metrics, RESTARTS) == 0


async def test_a_front_that_keeps_failing_ends_with_front_failed() -> None:
    metrics = Metrics()
    shutdown = trio.Event()
    with trio.fail_after(10), pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            url = (await nursery.start(partial(serve_http, tiny_app(), tiny_config(max_requests=0),
                                               shutdown.wait, metrics=metrics,
                                               restart=RestartPolicy(backoff_s=0.01, limit=3))))[0]
            while True:  # each request ends one serve; the third failure in a row is the last
                await status_of(url, "/ping", timeout_s=0.5)
    assert [type(e) for e in leaves(caught.value)] == [FrontFailed]
    assert sample(metrics, RESTARTS) == 2


async def test_a_port_in_use_fails_the_start_without_restarts() -> None:
    metrics = Metrics()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = tiny_config()
        config.bind = [f"127.0.0.1:{busy.getsockname()[1]}"]
        with trio.fail_after(10), pytest.raises(BaseExceptionGroup) as caught:
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(serve_http, tiny_app(), config, trio.sleep_forever, metrics=metrics))
    assert [type(e) for e in leaves(caught.value)] == [OSError]
    assert sample(metrics, RESTARTS) == 0
    # hypercorn's `create_sockets` does not close the socket whose bind failed: collect it here
    del caught
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
