"""LISTEN for writes to the ai channel of `sync_changes`: a latency hint for the snapshot actor.

An optional trigger on `public.sync_changes` (installed by `set_notify_trigger`) runs
`mana_ai.notify_ai_change()` (migration 0004), which NOTIFYs `mana_ai_changes` with the
table name of each `app_id='ai'` row a device writes. `ChangeListener` keeps one dedicated
connection LISTENing and hands every payload to its owner's `on_change`. It is only a hint:
Postgres drops a NOTIFY when nobody listens, so after every (re)connect the owner gets
`on_change("reconnected")` and re-scans; the interval poll stays the source of truth.

`ChangeListener.run`, one connection at a time (a broken one is closed before the next):

    connect + LISTEN --ok--> serve: payload -> on_change;  SELECT 1 every check_interval_s
         | failed               | terminated by the server, or the check failed
         v                      v
    log one line  <------  close (shielded, bounded; terminate() if close hangs)
         |
    back off (exponential, jitter, capped at reconnect_max_s), then connect again
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import trio
from trio_asyncio import aio_as_trio

from store.errors import DRIVER_ERRORS, StoreError
from store.sql import Q

log = logging.getLogger(__name__)

CHANNEL = "mana_ai_changes"
APPLICATION_NAME = "mana-ai-listen"  # how the listen backend shows up in pg_stat_activity

# These statements live here, not in store/queries.sql: only this module uses them, on its own
# connection outside the pool.
# 'mana-ai-runner' is the client_id of our own write-back (queries.sql `append_iteration`): a
# NOTIFY for it would only wake us for our own write.
_TRIGGER_EXISTS = """
SELECT EXISTS (
  SELECT 1 FROM pg_trigger
  WHERE tgrelid = 'public.sync_changes'::regclass
    AND tgname = 'mana_ai_notify_ai_change' AND NOT tgisinternal)
"""
_CREATE_TRIGGER = """
CREATE TRIGGER mana_ai_notify_ai_change AFTER INSERT ON public.sync_changes
FOR EACH ROW WHEN (NEW.app_id = 'ai' AND NEW.client_id <> 'mana-ai-runner')
EXECUTE FUNCTION mana_ai.notify_ai_change()
"""
_DROP_TRIGGER = "DROP TRIGGER IF EXISTS mana_ai_notify_ai_change ON public.sync_changes"
_HEALTH_CHECK = "SELECT 1"

_INBOX_SIZE = 32  # payloads waiting for on_change; more are dropped (a hint, not a queue)
_BACKOFF_BASE_S = 0.25
_CLOSE_TIMEOUT_S = 2.0
_RECONNECTED = "reconnected"
# what a connect or a check on a broken connection raises; anything else is a bug and propagates
_CONNECTION_ERRORS: tuple[type[Exception], ...] = (*DRIVER_ERRORS, trio.TooSlowError)


# -- the trigger ---------------------------------------------------------------------------------

async def _set_notify_trigger(pool: asyncpg.Pool, enabled: bool) -> tuple[bool, str | None]:
    async with pool.acquire() as conn:
        installed = False
        try:
            async with conn.transaction():
                await conn.execute(Q["migrate_lock"])  # DDL from two instances at once is serialised
                installed = bool(await conn.fetchval(_TRIGGER_EXISTS))
                if enabled and not installed:
                    await conn.execute(_CREATE_TRIGGER)
                elif not enabled and installed:
                    await conn.execute(_DROP_TRIGGER)
        except asyncpg.InsufficientPrivilegeError as exc:
            return installed, str(exc)  # rolled back: the trigger is as we found it
        return enabled, None


async def set_notify_trigger(pool: asyncpg.Pool, enabled: bool) -> bool:
    """Install (`enabled`) or drop the NOTIFY trigger; returns whether it is installed now.

    A role that may not change `public.sync_changes` gets one warning line and the current
    state (the daemon keeps polling); any other database error is a `StoreError`.
    """
    try:
        installed, denied = await aio_as_trio(_set_notify_trigger)(pool, enabled)
    except asyncpg.PostgresError as exc:
        raise StoreError(f"set_notify_trigger enabled={enabled}") from exc
    if denied is not None:
        log.warning("notify.trigger_denied", extra={"enabled": enabled, "installed": installed, "error": denied})
    else:
        log.info("notify.trigger_set", extra={"installed": installed})
    return bool(installed)


# -- the listen connection (asyncio units, each bridged once) ------------------------------------

async def _open_listen(dsn: str, timeout_s: float, on_notify: Callable[..., None],
                       on_terminate: Callable[..., None]) -> Any:
    conn = await asyncpg.connect(dsn, timeout=timeout_s, server_settings={"application_name": APPLICATION_NAME})
    try:
        conn.add_termination_listener(on_terminate)
        await conn.add_listener(CHANNEL, on_notify)  # runs LISTEN
    except BaseException:
        conn.terminate()  # never hand back, or leak, a half-set-up connection
        raise
    return conn


async def _health_check(conn: Any, timeout_s: float) -> Any:
    return await conn.fetchval(_HEALTH_CHECK, timeout=timeout_s)


async def _close_listen(conn: Any, on_terminate: Callable[..., None], timeout_s: float) -> None:
    conn.remove_termination_listener(on_terminate)  # our own close is no termination
    await conn.close(timeout=timeout_s)


async def _close_bounded(conn: Any, on_terminate: Callable[..., None]) -> None:
    """Close shielded and bounded; `terminate()` when close fails or hangs (dead peer)."""
    closed = False
    try:
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT_S):
            await aio_as_trio(_close_listen)(conn, on_terminate, _CLOSE_TIMEOUT_S)
            closed = True
    except _CONNECTION_ERRORS:
        pass  # the connection is gone either way; terminate() below frees what is left
    finally:
        if not closed:
            conn.terminate()  # sync: drops the socket without waiting for the server


# -- the listener --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ListenerState:
    """A read of `ChangeListener`'s counters (for /health and tests)."""

    connected: bool
    connects: int  # successful connects so far; more than one means it reconnected
    notifications: int  # payloads handed to on_change ("reconnected" not counted)
    last_error: str | None
    last_check_at: float | None  # trio.current_time() of the last successful health check


@dataclass(frozen=True)
class _Ended:
    """Why one connection attempt or connection ended."""

    event: str  # the log event: notify.connect_failed, notify.lost or notify.check_failed
    error: str
    uptime_s: float | None  # None when it never connected


class ChangeListener:
    """A supervised LISTEN on `CHANNEL` over its own connection (never a pooled one: the
    pool's reset runs UNLISTEN *). `on_change(payload)` runs in the `run` task, for each
    NOTIFY payload (a table name) and with "reconnected" after every connect."""

    def __init__(self, dsn: str, on_change: Callable[[str], None], *, check_interval_s: float = 30.0,
                 reconnect_max_s: float = 10.0, connect_timeout_s: float = 10.0) -> None:
        self._dsn = dsn
        self._on_change = on_change
        self._check_interval_s = check_interval_s
        self._reconnect_max_s = reconnect_max_s
        self._connect_timeout_s = connect_timeout_s  # bounds the connect and each health check
        self._rng = random.Random()
        self._connected = False
        self._connects = 0
        self._notifications = 0
        self._dropped = 0
        self._last_error: str | None = None
        self._last_check_at: float | None = None

    def state(self) -> ListenerState:
        return ListenerState(connected=self._connected, connects=self._connects,
                             notifications=self._notifications, last_error=self._last_error,
                             last_check_at=self._last_check_at)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; `started()` follows the first attempt, connected or not."""
        started = False

        def mark_started() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        failures = 0
        while True:
            ended = await self._connection(mark_started)
            mark_started()
            if ended.uptime_s is not None and ended.uptime_s >= self._reconnect_max_s:
                failures = 0  # it was healthy for a while: start over with short delays
            delay = min(self._reconnect_max_s, _BACKOFF_BASE_S * 2.0 ** min(failures, 16))
            delay = self._rng.uniform(delay / 2, delay)
            failures += 1
            self._last_error = ended.error
            log.warning(ended.event, extra={"error": ended.error, "retry_in_s": round(delay, 3),
                                            "connects": self._connects})
            await trio.sleep(delay)

    async def _connection(self, mark_started: Callable[[], None]) -> _Ended:
        """One connection from connect to close; returns why it ended. Cancel-safe."""
        mailbox, inbox = trio.open_memory_channel[str](_INBOX_SIZE)

        # asyncpg calls these on the trio-asyncio loop, in the trio thread: non-blocking only
        def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            try:
                mailbox.send_nowait(payload)
            except trio.WouldBlock:
                self._dropped += 1
                if self._dropped == 1 or self._dropped % 1000 == 0:
                    log.warning("notify.dropped", extra={"dropped": self._dropped})
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # this connection is already being replaced

        def on_terminate(_conn: object) -> None:
            mailbox.close()  # serving drains what arrived, then sees the end

        conn: Any = None
        try:
            try:
                with trio.fail_after(self._connect_timeout_s):
                    conn = await aio_as_trio(_open_listen)(self._dsn, self._connect_timeout_s, on_notify,
                                                           on_terminate)
            except _CONNECTION_ERRORS as exc:
                return _Ended("notify.connect_failed", _describe(exc), None)
            connected_at = trio.current_time()
            self._connected = True
            self._connects += 1
            log.info("notify.connected", extra={"connects": self._connects, "channel": CHANNEL})
            self._on_change(_RECONNECTED)  # NOTIFYs sent while we were away are lost: re-scan
            mark_started()
            ended = await self._serve(conn, inbox)
            return _Ended(ended.event, ended.error, trio.current_time() - connected_at)
        finally:
            self._connected = False
            mailbox.close()
            inbox.close()
            if conn is not None:
                await _close_bounded(conn, on_terminate)

    async def _serve(self, conn: Any, inbox: trio.MemoryReceiveChannel[str]) -> _Ended:
        while True:
            with trio.move_on_after(self._check_interval_s):
                async for payload in inbox:
                    self._notifications += 1
                    self._on_change(payload)
                return _Ended("notify.lost", "connection terminated", None)
            try:
                with trio.fail_after(self._connect_timeout_s):
                    await aio_as_trio(_health_check)(conn, self._connect_timeout_s)
            except _CONNECTION_ERRORS as exc:
                return _Ended("notify.check_failed", _describe(exc), None)
            self._last_check_at = trio.current_time()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
