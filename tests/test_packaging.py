"""What ships: every package is in the wheel's list and copied into the container image.

No Docker engine runs here, so the Dockerfile is checked as text against pyproject.toml.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def packages() -> set[str]:
    return {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in {"tests", "bench"}}


def test_every_package_is_in_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    included = {pattern.rstrip("*") for pattern in config["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages() <= included
    assert config["tool"]["setuptools"]["py-modules"] == ["supervisor"]


def test_the_image_copies_every_package_and_runs_as_a_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.MULTILINE))
    assert packages() <= copied, packages() - copied
    assert "supervisor.py" in dockerfile and re.search(r"^USER (?!root)\S+", dockerfile, re.MULTILINE)
    assert re.search(r'^CMD \["mana-ai", "serve"\]$', dockerfile, re.MULTILINE)  # exec form
    assert "HEALTHCHECK" in dockerfile and "EXPOSE 3067" in dockerfile


def test_every_setting_is_documented() -> None:
    from settings import KNOWN_VARIABLES

    documented = (ROOT / "docs" / "configuration.md").read_text()
    assert [name for name in sorted(KNOWN_VARIABLES) if f"`{name}`" not in documented] == []
