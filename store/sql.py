"""Loads `queries.sql` once into a name → statement mapping (procrastinate's pattern)."""

from __future__ import annotations

import re
from importlib import resources
from types import MappingProxyType
from typing import Mapping

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _parse(text: str) -> dict[str, str]:
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        lines = [ln for ln in body.strip().splitlines() if not ln.startswith("--")]
        statement = "\n".join(lines).strip()
        if name in queries:
            raise ValueError(f"duplicate query name {name!r} in queries.sql")
        queries[name] = statement.rstrip(";") if statement.count(";") == 1 else statement
    return queries


def read_package_text(name: str) -> str:
    return resources.files("store").joinpath(name).read_text(encoding="utf-8")


Q: Mapping[str, str] = MappingProxyType(_parse(read_package_text("queries.sql")))
