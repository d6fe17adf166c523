"""Every log event the daemon can emit is listed in docs/operations.md (found by reading the code)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVENT = re.compile(r"^[a-z_]+\.[a-z_]+$")
_LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


def events_in(source: str) -> set[str]:
    """String constants shaped `noun.verb` passed to a `log.<level>(…)` call or to `_fail(…)`."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        is_log = node.func.attr in _LEVELS and isinstance(node.func.value, ast.Name) and node.func.value.id == "log"
        if is_log or node.func.attr == "_fail":
            found |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                      and EVENT.match(a.value)}
    return found


def all_events() -> set[str]:
    files = [ROOT / "supervisor.py", ROOT / "runtime.py",
             *(p for pkg in ("actors", "store", "planner", "upstream", "http_api", "grants", "observability",
                             "settings", "demo")
               for p in (ROOT / pkg).rglob("*.py"))]
    return set().union(*(events_in(f.read_text()) for f in files))


def test_the_event_finder_finds_events() -> None:
    assert events_in('log.info("a.b", extra={}); log.log(10, "c.d"); self._fail(s, m, "e.f"); x("g.h")') == {
        "a.b", "c.d", "e.f"}


def test_every_log_event_is_documented() -> None:
    documented = (ROOT / "docs" / "operations.md").read_text()
    events = all_events()
    assert len(events) > 50
    assert sorted(e for e in events if f"`{e}`" not in documented) == []
