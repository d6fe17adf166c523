"""Run the daemon in-process for a test, on the test's pool, with HTTP on a free port."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import trio

from observability.metrics import Metrics
from settings import Settings
from supervisor import run_daemon

SERVICE_KEY = "test-service-key"


def daemon_settings(**overrides: Any) -> Settings:
    base = Settings(host="127.0.0.1", port=0, service_key=SERVICE_KEY, tick_enabled=False,
                    snapshot_lag_ms=0, instance_id="test-instance", grace_s=2)
    return dataclasses.replace(base, **overrides)


@dataclass
class RunningDaemon:
    url: str
    metrics: Metrics
    shutdown: trio.Event
    client: httpx.AsyncClient

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, {"service": "mana-ai", **labels})
        return 0.0 if value is None else value


@asynccontextmanager
async def running_daemon(pool: asyncpg.Pool, *, listen_dsn: str | None = None,
                         **overrides: Any) -> AsyncIterator[RunningDaemon]:
    settings = daemon_settings(**overrides)
    metrics = Metrics()
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(run_daemon, settings, pool, metrics, shutdown, listen_dsn=listen_dsn))
        url = binds[0]
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            try:
                yield RunningDaemon(url, metrics, shutdown, client)
            finally:
                shutdown.set()
