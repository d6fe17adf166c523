"""Store errors.

StoreError
 ├─ DatabaseUnavailable   connecting or talking to Postgres failed; see __cause__
 ├─ SchemaMismatch        sync_changes is missing or lacks columns (an operator must act)
 ├─ LeaseLost             this run's claim was taken over
 ├─ MissionGone           the mission was deleted while it was planned
 └─ RowRefused            a write-back's row is one the refresh would reject; nothing written
"""

from __future__ import annotations

import asyncpg


class StoreError(Exception):
    """A database operation failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class DatabaseUnavailable(StoreError):
    """Postgres could not be reached; see __cause__."""


class SchemaMismatch(StoreError):
    """The database is not what the daemon can work with (mana-sync's table is missing or old);
    waiting will not help, the operator must act."""


class LeaseLost(StoreError):
    """This run no longer holds its claim (it expired and another instance took it over)."""


class MissionGone(StoreError):
    """The mission was deleted while it was being planned."""


class RowRefused(StoreError):
    """The row this write-back would write is one the refresh would reject; nothing was written."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{detail} ({reason})")
        self.reason = reason  # a planner.storable reason: the metric label
        self.detail = detail  # sizes and limits, never content


# What talking to Postgres can raise besides our own errors: "the database is unavailable" (or
# misbehaved) as far as the runtime is concerned. Callers that survive database trouble catch
# exactly these. asyncpg's tree has three roots besides the socket's and the timeouts:
#   PostgresError        the server said no (incl. PostgresConnectionError: connection lost)
#   InterfaceError       misuse or a closed connection (ConnectionDoesNotExistError is a
#                        PostgresConnectionError; "connection is closed" is an InterfaceError)
#   InternalClientError  the protocol state machine broke, e.g. "cannot switch to state 15;
#                        another operation (2) is in progress" on a connection the server just
#                        terminated (incl. ProtocolError, OutdatedSchemaCacheError)
# OSError covers ConnectionError (reset, refused, broken pipe); TimeoutError is also what
# asyncio.TimeoutError is on 3.11 (asyncpg's own timeouts). trio's TooSlowError is ours, not the
# driver's: callers that set a deadline add it themselves.
DRIVER_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)
DATABASE_ERRORS: tuple[type[Exception], ...] = (StoreError, *DRIVER_ERRORS)
