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
    assert config["tool"]["setuptools"]["py-modules"] == ["supervisor", "runtime"]


def test_the_image_copies_every_package_and_runs_as_a_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.MULTILINE))
    assert packages() <= copied, packages() - copied
    assert "supervisor.py runtime.py" in dockerfile and re.search(r"^USER (?!root)\S+", dockerfile, re.MULTILINE)
    assert re.search(r'^CMD \["mana-ai", "serve"\]$', dockerfile, re.MULTILINE)  # exec form
    assert "HEALTHCHECK" in dockerfile and "EXPOSE 3067" in dockerfile


def test_every_setting_is_documented() -> None:
    from settings import KNOWN_VARIABLES

    documented = (ROOT / "docs" / "configuration.md").read_text()
    assert [name for name in sorted(KNOWN_VARIABLES) if f"`{name}`" not in documented] == []


def test_the_build_is_pinned_and_the_license_is_an_spdx_string() -> None:
    """setuptools deprecates `license` as a table (builds fail after 2027-02-18); an unpinned
    backend lets every build pick another setuptools."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["project"]["license"] == "LicenseRef-Proprietary"
    (backend,) = config["build-system"]["requires"]
    assert re.fullmatch(r"setuptools==\d+\.\d+\.\d+", backend), backend
    assert int(backend.split("==")[1].split(".")[0]) >= 77  # the first to read SPDX strings (PEP 639)


def test_the_version_has_one_source() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in config["project"] and config["project"]["dynamic"] == ["version"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "http_api.app.VERSION"}


def test_the_console_templates_and_static_files_ship_in_the_wheel() -> None:
    """package-data must name every file the console reads at run time (the Dockerfile installs the wheel)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["http_api"]
    files = [p.relative_to(ROOT / "http_api") for folder in ("templates", "static")
             for p in (ROOT / "http_api" / folder).rglob("*") if p.is_file()]
    assert files and [f for f in files if not any(f.match(pattern) for pattern in patterns)] == []
    from http_api.console import _STATIC
    assert {f.name for f in files if f.parts[0] == "static"} == set(_STATIC)
