"""The embedded database created with either generation of `sync_changes` (MANA_AI_SYNC_SCHEMA),
as an operator starts the daemon."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from test_daemon_process import Daemon, daemon_env, free_port, wait_healthy
from test_embedded_crash import state  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


async def test_the_embedded_table_is_created_in_the_chosen_generation_and_kept_afterwards(
        tmp_path: Path, state: Path) -> None:  # noqa: F811
    port = free_port()
    env = daemon_env(PORT=str(port), MANA_AI_STATE_DIR=str(state), MANA_AI_HOST="127.0.0.1",
                     TICK_ENABLED="false", MANA_AI_SYNC_SCHEMA="field-meta")
    first = Daemon(tmp_path, [], env)
    await first.start()
    body = await wait_healthy(f"http://127.0.0.1:{port}", daemon=first)
    assert body["syncChanges"] == {"generation": "field-meta", "stampsColumn": "field_meta", "origin": True,
                                   "spaceId": True}
    assert first.process is not None
    first.process.send_signal(signal.SIGTERM)
    assert await first.wait() == 0, first.log()
    assert "sync_changes.generation" in first.log() and "generation_differs" not in first.log()

    # asked for v0.6 later: the existing table is used as it is, with a warning
    again = Daemon(tmp_path, ["migrate"], {**env, "MANA_AI_SYNC_SCHEMA": "v0.6"})
    await again.start()
    assert await again.wait() == 0, again.log()
    assert '"syncSchema": "field-meta"' in again.log()
