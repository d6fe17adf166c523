"""A first run as docs/operations.md ("Check it works") tells it, with real processes: the
stand-in LLM (`mana-ai stand-in-llm`), the daemon pointed at it, one example mission
(`mana-ai seed-example`), a tick, and the plan written back. And a shared env file of the Mana
services (variables other services and tools read) starts the daemon."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from conftest import PgServer
from test_daemon_process import Daemon, daemon_env, free_port, wait_healthy

pytestmark = pytest.mark.slow

MISSION_PROMPT = {"model": "any", "messages": [
    {"role": "system", "content": "You plan.\nTools:\n  • create_task (Create a task)\n  • create_note (Write a note)\n"},
    {"role": "user", "content": "# Mission: Weekly review\n\nObjective: plan my week\n"}]}


class StandIn:
    def __init__(self, process: trio.Process, url: str, output: bytearray) -> None:
        self.process, self.url, self.output = process, url, output


async def _read_until(stream: trio.abc.ReceiveStream, output: bytearray, pattern: re.Pattern[bytes]) -> re.Match[bytes]:
    while (found := pattern.search(output)) is None:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise AssertionError(f"the output ended before {pattern.pattern!r}: {output.decode()!r}")
        output += chunk
    return found


@asynccontextmanager
async def stand_in_llm(*args: str) -> AsyncIterator[StandIn]:
    """`mana-ai stand-in-llm --port 0`, until its URL is printed; killed afterwards if still running."""
    process = await trio.lowlevel.open_process([sys.executable, "-m", "supervisor", "stand-in-llm", *args],
                                               env=daemon_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    output = bytearray()
    try:
        with trio.fail_after(20):
            found = await _read_until(process.stdout, output, re.compile(rb"(http://127\.0\.0\.1:\d+)\s"))
        yield StandIn(process, found[1].decode(), output)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _rest_of(process: trio.Process, output: bytearray) -> bytes:
    assert process.stdout is not None
    with trio.fail_after(10):
        while chunk := await process.stdout.receive_some(4096):
            output += chunk
        await process.wait()
    return bytes(output)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
async def test_the_stand_in_llm_answers_plans_until_a_signal_stops_it(stop: signal.Signals) -> None:
    async with stand_in_llm("--port", "0") as llm:
        assert f"MANA_LLM_URL={llm.url}" in llm.output.decode()
        async with httpx.AsyncClient(base_url=llm.url, timeout=10) as client:
            models = await client.get("/v1/models")
            assert models.status_code == 200 and models.json()["data"][0]["id"]
            answer = await client.post("/v1/chat/completions", json=MISSION_PROMPT)
        assert answer.status_code == 200
        plan = json.loads(answer.json()["choices"][0]["message"]["content"].strip("`").removeprefix("json"))
        assert [s["toolName"] for s in plan["steps"]] == ["create_task", "create_note"]
        llm.process.send_signal(stop)
        output = (await _rest_of(llm.process, llm.output)).decode()
        assert llm.process.returncode == 0, output
    assert "Traceback" not in output
    assert "answered 'Weekly review' with 2 steps" in output
    assert "stand-in LLM stopped" in output


async def test_the_check_it_works_walkthrough_plans_the_example_mission(
        tmp_path: Path, db_dsn: str, pg: PgServer) -> None:
    async with stand_in_llm("--port", "0") as llm:
        port = free_port()
        env = daemon_env(PORT=str(port), SYNC_DATABASE_URL=db_dsn, MANA_AI_HOST="127.0.0.1",
                         MANA_LLM_URL=llm.url, TICK_ENABLED="false")
        daemon = Daemon(tmp_path, [], env)
        await daemon.start()
        try:
            await wait_healthy(f"http://127.0.0.1:{port}", daemon=daemon)
            seeding = await trio.run_process([sys.executable, "-m", "supervisor", "seed-example"], env=env,
                                             capture_stdout=True, capture_stderr=True, check=False)
            assert seeding.returncode == 0, seeding.stderr.decode()
            seeded = json.loads(seeding.stdout.decode().splitlines()[-1])
            assert seeded["userId"] == "example-user" and seeded["title"] == "Weekly review"
            headers = {"X-Service-Key": "dev-service-key"}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
                tick = (await client.post("/internal/tick")).json()
                assert (tick["dueMissionCount"], tick["plansWrittenBack"], tick["errors"]) == (1, 1, []), tick
                missions = (await client.get("/internal/missions/example-user")).json()["missions"]
            assert [(m["missionId"], m["reason"]) for m in missions] == [(seeded["missionId"], "planned")]
        finally:
            assert daemon.process is not None
            daemon.process.send_signal(signal.SIGTERM)
            assert await daemon.wait() == 0, daemon.log()
    steps = pg.sql("SELECT string_agg(s->'intent'->>'toolName', ',') FROM sync_changes, "
                   "jsonb_array_elements(data->'iterations'->0->'plan') s WHERE client_id = 'mana-ai-runner'",
                   urlsplit(db_dsn).path[1:])
    assert steps == "create_task,create_note"


SHARED_ENV_FILE = """\
# one .env for the Mana services
MANA_AI_PUBLIC_KEY_PEM=-----BEGIN PUBLIC KEY-----\\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\\n-----END PUBLIC KEY-----
MANA_AI_BENCH_DSN=postgresql://bench:bench-secret@127.0.0.1:5432/bench
MANA_AI_TEST_PG_DSN=postgresql://test:test-secret@127.0.0.1:5432/postgres
MANA_AI_LOG_LEVEL=debug
"""


def read_env_file(text: str) -> dict[str, str]:
    """`NAME=value` lines as `docker run --env-file` and compose's `env_file` read them."""
    pairs = [line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return {name: value for name, value in pairs}


async def test_a_shared_env_file_of_the_mana_services_starts_the_daemon(tmp_path: Path, db_dsn: str) -> None:
    port = free_port()
    env = daemon_env(PORT=str(port), SYNC_DATABASE_URL=db_dsn, MANA_AI_HOST="127.0.0.1", TICK_ENABLED="false",
                     **read_env_file(SHARED_ENV_FILE))
    daemon = Daemon(tmp_path, [], env)
    await daemon.start()
    await wait_healthy(f"http://127.0.0.1:{port}", daemon=daemon)
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGTERM)
    assert await daemon.wait() == 0, daemon.log()
    log = daemon.log()
    ignored = [line for line in log.splitlines() if "config.shared_variables_ignored" in line]
    assert len(ignored) == 1 and "MANA_AI_BENCH_DSN,MANA_AI_PUBLIC_KEY_PEM,MANA_AI_TEST_PG_DSN" in ignored[0], log
    assert "bench-secret" not in log and "test-secret" not in log and "MIIBIjAN" not in log


async def test_the_stand_in_llm_on_a_taken_port_says_so_in_one_line() -> None:
    with trio.socket.socket() as busy:
        await busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = await trio.run_process([sys.executable, "-m", "supervisor", "stand-in-llm", "--port", str(port)],
                                      env=daemon_env(), capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == [
        f"mana-ai: stand-in LLM: cannot listen on 127.0.0.1:{port}: [Errno 98] Address already in use"]
