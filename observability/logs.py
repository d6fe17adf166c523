"""One line per event: a stable event name plus `extra` context, as text or JSON."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import TextIO

# attributes every LogRecord has; anything else on a record came from `extra=`
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# our loggers (the daemon's packages); every other logger is a library's
_OURS = ("mana_ai", "__main__", "supervisor", "actors", "store", "planner", "upstream", "http_api", "grants",
         "observability", "settings", "demo")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _ours(record: logging.LogRecord) -> bool:
    return record.name.split(".", 1)[0] in _OURS


def _traceback_or_line(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    """Our bugs keep their traceback; a library's exception is one line (type and message),
    unless the daemon logs at DEBUG."""
    if not record.exc_info:
        return None
    if _ours(record) or logging.getLogger().isEnabledFor(logging.DEBUG):
        return formatter.formatException(record.exc_info)
    exc = record.exc_info[1]
    return None if exc is None else f"{type(exc).__name__}: {exc}"


def _context(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{ts}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """`2026-11-24T05:00:00.123Z INFO  cycle.completed due=3 duration_ms=12`"""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), f"{record.levelname:<5}", _escape(record.getMessage())]
        parts += [f"{k}={_text_value(v)}" for k, v in _context(record).items()]
        line = " ".join(parts)
        problem = _traceback_or_line(self, record)
        if problem is not None:
            line += ("\n" + problem) if _ours(record) else f" error={_text_value(problem)}"
        return line


def _escape(text: str) -> str:
    """Control characters (NUL, newlines, ESC …) as `\\uXXXX`: one event stays one line."""
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _text_value(value: object) -> str:
    text = str(value)
    needs_quotes = not text or " " in text or '"' in text or _CONTROL.search(text) is not None
    return json.dumps(text, ensure_ascii=False) if needs_quotes else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, then the context keys."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **_context(record),
        }
        problem = _traceback_or_line(self, record)
        if problem is not None:
            body["exc" if _ours(record) else "error"] = problem
        return json.dumps(body, ensure_ascii=False, default=str)


def configure_logging(fmt: str, level: str, stream: TextIO | None = None) -> None:
    """Install one handler on the root logger (called once, by the supervisor)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # libraries (httpx's "HTTP Request:" line per call, hypercorn, asyncpg, asyncio) speak only
    # from WARNING up, through the same formatter, unless the daemon logs at DEBUG
    root.setLevel(level if level == "DEBUG" else max(logging.WARNING, logging.getLevelName(level)))
    for name in _OURS:
        logging.getLogger(name).setLevel(level)
