"""A real PgBouncer in front of the test server, for process tests of the daemon behind a pooler.

    async with running_pgbouncer(pg.admin_dsn, pool_mode="transaction", pool_size=3) as bouncer:
        bouncer.dsn("mana_ai_t1_0")   # a database of the server, reached through PgBouncer

Debian's `pgbouncer` package (`.ci/run` installs it when missing); `PGBOUNCER` (the path) skips
the lookup. Every database name falls through to the server (`* =` in [databases]), clients
authenticate with `trust` against a userlist naming the server's user, and PgBouncer logs in
to the server with the test DSN's own user and password. PgBouncer refuses to run as root: as
root it runs as the owner of the server's socket directory (the embedded server's OS user).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import trio

__all__ = ["PgBouncer", "pgbouncer_binary", "running_pgbouncer"]


def pgbouncer_binary() -> str | None:
    """The pgbouncer executable, or None when it is not installed."""
    configured = os.environ.get("PGBOUNCER")
    if configured:
        return configured
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None)


@dataclass(frozen=True)
class PgBouncer:
    host: str
    port: int
    user: str
    log_path: Path

    def dsn(self, database: str) -> str:
        return f"postgresql://{quote(self.user)}@{self.host}:{self.port}/{database}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server(dsn: str) -> tuple[str, int, str, str]:
    """host (or socket directory), port, user and password of a libpq URL."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = parts.hostname or query.get("host", ["localhost"])[0]
    port = parts.port or int(query.get("port", ["5432"])[0])
    return host, port, parts.username or "postgres", parts.password or ""


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _config(workdir: Path, server_dsn: str, port: int, pool_mode: str, pool_size: int,
            round_robin: bool) -> tuple[str, str]:
    host, server_port, user, password = _server(server_dsn)
    connect = f"host={_quoted(host)} port={server_port} user={_quoted(user)}"
    if password:
        connect += f" password={_quoted(password)}"
    (workdir / "userlist.txt").write_text(f'"{user}" ""\n')
    ini = f"""[databases]
* = {connect}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "userlist.txt"}
pool_mode = {pool_mode}
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 500
server_lifetime = 3600
server_round_robin = {1 if round_robin else 0}
ignore_startup_parameters = extra_float_digits
logfile = {workdir / "pgbouncer.log"}
pidfile =
admin_users = {user}
"""
    (workdir / "pgbouncer.ini").write_text(ini)
    return host, user


async def _wait_accepting(port: int, process: trio.Process, bouncer: PgBouncer) -> None:
    with trio.fail_after(15):
        while True:
            if process.returncode is not None:
                raise AssertionError(f"pgbouncer exited with {process.returncode}:\n{bouncer.log()}")
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.02)  # a process we cannot be told about: its port is the signal
                continue
            await stream.aclose()
            return


@asynccontextmanager
async def running_pgbouncer(server_dsn: str, *, pool_mode: str = "transaction",
                            pool_size: int = 3, round_robin: bool = True) -> AsyncIterator[PgBouncer]:
    """PgBouncer on a free loopback port until the block ends (then SIGTERM, SIGKILL after 10 s).

    `round_robin` (`server_round_robin = 1`): a client's next transaction goes to the server
    connection used least recently, not to the one it just left (PgBouncer's default reuses that
    one while the load is light), so a connection change between transactions is the rule."""
    binary = pgbouncer_binary()
    if binary is None:
        raise RuntimeError("pgbouncer is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="mana-ai-pgbouncer-"))
    try:
        port = _free_port()
        host, user = _config(workdir, server_dsn, port, pool_mode, pool_size, round_robin)
        args = [binary]
        if os.geteuid() == 0:  # it will not run as root: run as whoever may reach the server
            owner = os.stat(host).st_uid if host.startswith("/") else pwd.getpwnam("nobody").pw_uid
            for path in (workdir, *workdir.iterdir()):
                os.chown(path, owner, -1)
            args += ["-u", pwd.getpwuid(owner).pw_name]
        args.append(str(workdir / "pgbouncer.ini"))
        bouncer = PgBouncer("127.0.0.1", port, user, workdir / "pgbouncer.log")
        process = await trio.lowlevel.open_process(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL)  # it logs to log_path
        try:
            await _wait_accepting(port, process, bouncer)
            yield bouncer
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)  # immediate shutdown
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(10) as waited:
                        await process.wait()
                    if waited.cancelled_caught:
                        process.kill()
                        await process.wait()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
