"""Serve the app with hypercorn's trio worker inside the caller's nursery."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio

from http_api import _hypercorn_fix  # noqa: F401  (applies the keep-alive fix at import)

log = logging.getLogger(__name__)


def hypercorn_config(host: str, port: int, graceful_timeout_s: float) -> Config:
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = graceful_timeout_s
    config.keep_alive_timeout = 5
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = None
    return config


async def serve_http(
    app: QuartTrio, config: Config, shutdown_trigger: Callable[[], Awaitable[None]],
    *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `shutdown_trigger` returns; `nursery.start` gets the bound addresses."""
    await serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)
