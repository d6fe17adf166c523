"""deploy/compose.yaml is parsed and checked against the daemon (no Docker engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from settings import KNOWN_VARIABLES, ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy" / "compose.yaml"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _interpolated(value: str) -> str:
    """`${NAME:-default}` → default, `${NAME:?message}` → a stand-in: what compose would pass."""
    value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{\w+:\?[^}]*\}", "set-by-the-operator", value)


def test_the_daemon_runs_twice_against_a_healthy_postgres() -> None:
    services = compose()["services"]
    daemon, postgres = services["mana-ai"], services["postgres"]
    assert daemon["deploy"]["replicas"] == 2
    assert daemon["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in daemon and "healthcheck" in postgres
    assert "/health" in " ".join(daemon["healthcheck"]["test"])
    assert (ROOT / "deploy" / daemon["build"] / "Dockerfile").exists()


def test_postgres_gets_mana_syncs_table_at_init() -> None:
    volumes = compose()["services"]["postgres"]["volumes"]
    scripts = [v.split(":")[0] for v in volumes if "docker-entrypoint-initdb.d" in v]
    assert scripts and all((ROOT / "deploy" / s).resolve().is_file() for s in scripts)


def test_every_variable_is_a_setting_and_the_defaults_load() -> None:
    environment: dict[str, str] = compose()["services"]["mana-ai"]["environment"]
    assert sorted(set(environment) - KNOWN_VARIABLES) == []
    settings = load_settings({k: _interpolated(str(v)) for k, v in environment.items()})
    assert settings.sync_database_url is not None and settings.notify
    assert settings.service_key == "set-by-the-operator"  # the compose file refuses to start without one


def _dockerfile_env() -> dict[str, str]:
    """The `ENV` of the Dockerfile's runtime stage (`NAME=value` pairs, continued lines joined)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            found.update(pair.split("=", 1) for pair in line[4:].split())  # type: ignore[misc]
    return found


def test_the_image_serves_every_interface_only_with_a_service_key_of_its_own() -> None:
    image = _dockerfile_env()
    assert image["MANA_AI_HOST"] == "0.0.0.0"  # so that a missing key stops the container, not hides it
    with pytest.raises(ConfigError) as caught:
        load_settings(image).check_serving()
    assert str(caught.value).startswith("MANA_SERVICE_KEY is not set")
    environment: dict[str, str] = compose()["services"]["mana-ai"]["environment"]
    assert re.fullmatch(r"\$\{MANA_SERVICE_KEY:\?[^}]+\}", environment["MANA_SERVICE_KEY"])
    with_compose = load_settings({**image, **{k: _interpolated(str(v)) for k, v in environment.items()}})
    with_compose.check_serving()
    assert with_compose.bind_host == "0.0.0.0"
