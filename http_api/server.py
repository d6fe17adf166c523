"""Serve the app with hypercorn's trio worker inside the caller's nursery; restart it if it fails.

Errors of one connection stay in that connection (`_hypercorn_fix`). Should hypercorn's `serve`
fail anyway, `serve_http` starts it again on the same addresses after a short backoff, while
the rest of the daemon (planning) goes on. Only a front that keeps failing ends the daemon.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio

from http_api._hypercorn_fix import ConnectionErrorKind, describe_error, on_connection_error  # applies the fixes
from observability.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestartPolicy:
    """When `serve_http` starts hypercorn again after it failed, and when it gives up."""

    backoff_s: float = 0.1        # before the first restart; doubled per failure in a row ...
    max_backoff_s: float = 5.0    # ... up to this
    limit: int = 10               # failures in a row that end the daemon instead
    stable_after_s: float = 30.0  # a serve that ran this long resets the count

    def backoff(self, failures: int) -> float:
        return min(self.backoff_s * 2.0 ** (failures - 1), self.max_backoff_s)


class FrontFailed(Exception):
    """The HTTP front failed `RestartPolicy.limit` times in a row; see __cause__."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


def hypercorn_config(host: str, port: int, graceful_timeout_s: float) -> Config:
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = graceful_timeout_s
    config.keep_alive_timeout = 5
    # hypercorn's default backlog of 100 drops SYNs when a few hundred clients connect at once
    # (a scrape storm, a load balancer's health checks after a restart): each costs a 1 s retransmit
    config.backlog = 2048
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = None
    return config


async def serve_http(
    app: QuartTrio, config: Config, shutdown_trigger: Callable[[], Awaitable[None]],
    *, metrics: Metrics | None = None, restart: RestartPolicy = RestartPolicy(),
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `shutdown_trigger` returns; `nursery.start` gets the bound addresses once.

    A failure before the first start (the port is taken) propagates at once. After it, a
    failure of hypercorn's `serve` (or its return before `shutdown_trigger`) is followed by a
    restart on the same addresses after a backoff, logged (`http.front_restarted`) and counted
    in `metrics`; `restart.limit` failures in a row, each within `restart.stable_after_s` of its
    start, raise `FrontFailed`. With `metrics`, errors kept to one connection are counted too.
    """
    token = on_connection_error.set(None if metrics is None else partial(_count_connection_error, metrics))
    try:
        stopping = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_set_when_done, shutdown_trigger, stopping)
            await _serve_restarting(app, config, stopping, metrics, restart, task_status)
    finally:
        on_connection_error.reset(token)


async def _serve_restarting(app: QuartTrio, config: Config, stopping: trio.Event, metrics: Metrics | None,
                            restart: RestartPolicy, task_status: trio.TaskStatus[list[str]]) -> None:
    started = False
    failures = 0
    failed: dict[str, str] = {}  # what ended the previous serve, logged once the restart is up
    while not stopping.is_set():
        began = trio.current_time()
        try:
            async with trio.open_nursery() as attempt:
                binds = await attempt.start(partial(serve, app, config, shutdown_trigger=stopping.wait))
                if not started:
                    started = True
                    task_status.started(binds)
                    config = _bound_to(config, binds)  # restarts keep the ports the OS picked
                else:
                    log.warning("http.front_restarted", extra={**failed, "failures": failures})
                    if metrics is not None:
                        metrics.http_front_restarts.inc()
        except Exception as exc:
            if not started:
                raise
            error: Exception | None = exc
            failed = describe_error(exc)
        else:
            if stopping.is_set():
                return
            error, failed = None, {"error": "serve returned", "where": "?"}
        failures = 1 if trio.current_time() - began >= restart.stable_after_s else failures + 1
        if failures >= restart.limit:
            log.error("http.front_failed", extra={**failed, "failures": failures})
            raise FrontFailed() from error
        with trio.move_on_after(restart.backoff(failures)):
            await stopping.wait()


def _bound_to(config: Config, binds: list[str]) -> Config:
    """A copy of `config` binding the addresses hypercorn reported (port 0 resolved)."""
    again = copy.copy(config)
    secure = [b.split("://", 1)[1] for b in binds if b.startswith("https://")]
    plain = [b.split("://", 1)[1] for b in binds if b.startswith("http://")]
    again.bind, again.insecure_bind = (secure, plain) if config.ssl_enabled else (plain, [])
    return again


async def _set_when_done(trigger: Callable[[], Awaitable[None]], done: trio.Event) -> None:
    await trigger()
    done.set()


def _count_connection_error(metrics: Metrics, kind: ConnectionErrorKind) -> None:
    metrics.http_connection_errors.labels(kind=kind).inc()
