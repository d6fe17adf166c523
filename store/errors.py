"""Store errors.

StoreError
 └─ DatabaseUnavailable   connecting or talking to Postgres failed; see __cause__
"""

from __future__ import annotations

import asyncpg


class StoreError(Exception):
    """A database operation failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class DatabaseUnavailable(StoreError):
    """Postgres could not be reached; see __cause__."""


class LeaseLost(StoreError):
    """This run no longer holds its claim (it expired and another instance took it over)."""


class MissionGone(StoreError):
    """The mission was deleted while it was being planned."""


# What talking to Postgres can raise besides our own errors: the driver's, the socket's, and
# asyncpg's own timeouts. Callers that survive database trouble catch exactly these.
DRIVER_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
DATABASE_ERRORS: tuple[type[Exception], ...] = (StoreError, *DRIVER_ERRORS)
