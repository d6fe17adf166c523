"""EmbeddedPostgres in-process: what it trusts in a data directory it finds."""

from __future__ import annotations

import subprocess
import time

import pytest

from store.embedded import EmbeddedPostgres
from test_embedded_crash import own_state_dir, postgres_under

pytestmark = pytest.mark.slow


def test_a_stale_postmaster_pid_naming_another_process_is_neither_trusted_nor_signalled() -> None:
    """After a reboot (or in a new container) the PID in postmaster.pid may belong to anyone."""
    with own_state_dir() as state, subprocess.Popen(["sleep", "60"]) as bystander:
        try:
            embedded = EmbeddedPostgres(state)
            embedded.start()
            embedded.stop()
            assert postgres_under(state) == []
            pgdata = embedded.pgdata
            (pgdata / "postmaster.pid").write_text(  # as a server running when the machine went down
                f"{bystander.pid}\n{pgdata}\n{int(time.time())}\n5432\n{pgdata}\n\n  5432001    0\nready   \n")
            embedded.start()
            try:
                assert postgres_under(state), "it trusted the stale pid file and started no server"
            finally:
                embedded.stop()
            assert bystander.poll() is None, "the bystander was signalled"
            assert postgres_under(state) == []
        finally:
            bystander.kill()
