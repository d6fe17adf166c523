"""deploy/compose.yaml is parsed and checked against the daemon (no Docker engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from settings import KNOWN_VARIABLES, load_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy" / "compose.yaml"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _interpolated(value: str) -> str:
    """`${NAME:-default}` → default, `${NAME:?message}` → a stand-in: what compose would pass."""
    value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{\w+:\?[^}]*\}", "set-by-operator", value)


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
    assert settings.service_key == "set-by-operator"  # the compose file refuses to start without one
