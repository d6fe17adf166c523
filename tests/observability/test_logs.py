"""Logging: one line per event with stable keys, text or JSON, and never secrets or user content."""

from __future__ import annotations

import io
import json
import logging
import tomllib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest

from fake_llm import Reply, completion, plan_reply, running_fake_llm
from observability.logs import JsonFormatter, TextFormatter, configure_logging
from planning import CREATE_TASK, agent_row, planning_runtime
from seed import insert_rows, mission

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)
SECRETS = ["sk-SERVICE-KEY-SECRET", "PRIVATE-MISSION-TITLE", "PRIVATE-OBJECTIVE", "PRIVATE-CONCEPT",
           "AGENT-SYSTEM-PROMPT-SECRET", "AGENT-MEMORY-SECRET", "LLM-REPLY-ECHO-SECRET"]


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("mana_ai.test", logging.INFO, __file__, 1, msg, None, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_text_lines_have_the_event_then_key_values() -> None:
    line = TextFormatter().format(record("mission.planned", mission="m1", steps=2, note="two words"))
    assert line.endswith(' INFO  mission.planned mission=m1 steps=2 note="two words"')


def test_json_lines_are_one_object_with_stable_keys() -> None:
    body = json.loads(JsonFormatter().format(record("cycle.completed", due=3, duration_ms=1.5)))
    assert body == {"ts": body["ts"], "level": "info", "logger": "mana_ai.test", "event": "cycle.completed",
                    "due": 3, "duration_ms": 1.5}


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    out = io.StringIO()
    configure_logging("json", "DEBUG", stream=out)
    text = logging.StreamHandler(out)
    text.setFormatter(TextFormatter())
    root.addHandler(text)  # both formats into one buffer
    try:
        yield out
    finally:
        root.handlers[:] = before[0]
        root.setLevel(before[1])


async def test_no_secret_or_user_content_reaches_the_logs(pool: asyncpg.Pool, captured: io.StringIO) -> None:
    await insert_rows(pool, *[{**row, "created_at": PAST} for row in [
        agent_row("a1", systemPrompt="AGENT-SYSTEM-PROMPT-SECRET", memory="AGENT-MEMORY-SECRET"),
        mission("m-ok", agent_id="a1", title="PRIVATE-MISSION-TITLE", objective="PRIVATE-OBJECTIVE",
                conceptMarkdown="PRIVATE-CONCEPT"),
        mission("m-prose", title="PRIVATE-MISSION-TITLE prose"),
        mission("m-broken", title="PRIVATE-MISSION-TITLE broken")]])
    replies = {"prose": completion("Sorry: LLM-REPLY-ECHO-SECRET"), "broken": Reply(status=503, body="busy"),
               "ok": plan_reply([CREATE_TASK])}
    async with running_fake_llm() as llm:
        llm.responder = lambda body: next(r for k, r in replies.items()
                                          if k in body["messages"][1]["content"] or k == "ok")
        async with planning_runtime(pool, llm, service_key="sk-SERVICE-KEY-SECRET", llm_retries=0) as runtime:
            stats = await runtime.snapshots.run_cycle()
    assert stats.plans_written_back == 1 and stats.parse_failures == 1 and len(stats.errors) == 1
    logs = captured.getvalue()
    assert "mission.planned" in logs and "mission.parse_failed" in logs and "mission.failed" in logs
    for secret in SECRETS:
        assert secret not in logs, secret


def test_control_characters_never_break_a_line() -> None:
    line = TextFormatter().format(record("route.bad\x00input", path="/internal/missions/\x00\n\x1b[31m"))
    assert "\n" not in line and "\x00" not in line and "\x1b" not in line
    assert line.endswith(r'route.bad\u0000input path="/internal/missions/\u0000\n\u001b[31m"')


def test_libraries_log_from_warning_up_through_our_formatter_in_one_line() -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    out = io.StringIO()
    try:
        configure_logging("text", "INFO", stream=out)
        logging.getLogger("httpx").info('HTTP Request: POST http://llm/v1/chat/completions "HTTP/1.1 200 OK"')
        logging.getLogger("mana_ai").info("daemon.listening")
        try:
            raise ConnectionError("unexpected connection_lost() call")
        except ConnectionError:
            logging.getLogger("asyncpg.pool").warning("Failed to restore the pool connection floor; retrying",
                                                      exc_info=True)
        lines = out.getvalue().splitlines()
        assert len(lines) == 2, lines  # no "HTTP Request:" line, and no traceback
        assert lines[0].endswith("INFO  daemon.listening")
        assert lines[1].endswith('WARNING Failed to restore the pool connection floor; retrying '
                                 'error="ConnectionError: unexpected connection_lost() call"')
        out.truncate(0)
        out.seek(0)
        configure_logging("text", "DEBUG", stream=out)  # debugging: libraries speak, tracebacks too
        logging.getLogger("httpx").info("HTTP Request: POST http://llm/")
        assert "HTTP Request" in out.getvalue()
    finally:
        root.handlers[:] = before[0]
        root.setLevel(before[1])
        for name in ("mana_ai", "__main__", "supervisor", "actors", "store", "planner", "upstream", "http_api",
                     "grants", "observability", "settings", "demo"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def shipped_packages() -> list[str]:
    config = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    return sorted(p.rstrip("*") for p in config["tool"]["setuptools"]["packages"]["find"]["include"])


def test_every_shipped_package_logs_as_ours() -> None:
    """A package whose loggers are not ours would lose its INFO lines (libraries speak from
    WARNING up) and the tracebacks of its bugs."""
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    out = io.StringIO()
    packages = shipped_packages()
    try:
        configure_logging("text", "INFO", stream=out)
        for package in packages:
            logger = logging.getLogger(f"{package}.some_module")
            logger.info("package.spoke", extra={"package": package})
            try:
                raise RuntimeError("a bug")
            except RuntimeError:
                logger.error("package.crashed", exc_info=True, extra={"package": package})
        text = out.getvalue()
        assert [p for p in packages if f"package.spoke package={p}" not in text] == []
        assert text.count("Traceback (most recent call last)") == len(packages), text
    finally:
        root.handlers[:] = before[0]
        root.setLevel(before[1])
        for name in ("mana_ai", "__main__", "supervisor", *packages):
            logging.getLogger(name).setLevel(logging.NOTSET)
