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


#: what an operator sets for the variables compose requires (`${NAME:?message}`)
OPERATOR = {"MANA_SERVICE_KEY": "set-by-the-operator", "MANA_LLM_URL": "https://llm.example.com/v1"}


def _interpolated(value: str) -> str:
    """`${NAME:-default}` → default, `${NAME:?message}` → the operator's value: what compose would pass."""
    value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: OPERATOR[m[1]], value)


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


def _seconds(duration: str) -> float:
    """A compose duration (`40s`, `1m30s`) in seconds."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts is not None and duration, duration
    return int(parts[1] or 0) * 60 + int(parts[2] or 0)


def test_every_default_url_names_a_service_of_the_file() -> None:
    """A default like `http://mana-llm:3020` for a service the file does not define fails every call."""
    services = compose()["services"]
    for name, service in services.items():
        for variable, value in service.get("environment", {}).items():
            for host in re.findall(r"\$\{\w+:-\w+://([\w.-]+)", str(value)):
                assert host in services, f"{name}: {variable} defaults to {host}, which is not a service here"


def test_the_llm_url_is_required_and_the_stand_in_is_a_profile() -> None:
    services = compose()["services"]
    environment = services["mana-ai"]["environment"]
    required = re.fullmatch(r"\$\{MANA_LLM_URL:\?([^}]+)\}", environment["MANA_LLM_URL"])
    assert required is not None, environment["MANA_LLM_URL"]
    assert "http://stand-in-llm:3020" in required[1] and "--profile stand-in" in required[1]
    stand_in = services["stand-in-llm"]
    assert stand_in["profiles"] == ["stand-in"]  # only started when asked for
    assert stand_in["command"][:2] == ["mana-ai", "stand-in-llm"]
    assert stand_in["command"][2:] == ["--host", "0.0.0.0", "--port", "3020"]
    assert "/v1/models" in " ".join(stand_in["healthcheck"]["test"])  # not the image's /health on 3067
    header = COMPOSE.read_text().split("\nname:")[0]
    assert "MANA_LLM_URL" in header and "--profile stand-in" in header


def test_every_service_restarts_unless_stopped() -> None:
    assert {name: s.get("restart") for name, s in compose()["services"].items()} == {
        name: "unless-stopped" for name in compose()["services"]}


def test_the_stop_grace_period_covers_the_daemons_own_shutdown() -> None:
    from supervisor import shutdown_bound_s

    environment: dict[str, str] = compose()["services"]["mana-ai"]["environment"]
    settings = load_settings({k: _interpolated(str(v)) for k, v in environment.items()})
    grace = _seconds(compose()["services"]["mana-ai"]["stop_grace_period"])
    assert grace >= shutdown_bound_s(settings) + 10, (grace, shutdown_bound_s(settings))
    assert "stop_grace_period" in COMPOSE.read_text().split("\nname:")[0]  # the header says why


def test_the_readme_docker_run_waits_for_the_daemons_own_shutdown() -> None:
    from supervisor import shutdown_bound_s

    readme = (ROOT / "README.md").read_text()
    runs = re.findall(r"docker run [^`]*", readme)
    assert runs, "the README shows no docker run"
    bound = shutdown_bound_s(load_settings(_dockerfile_env()))
    for run in runs:
        timeout = re.search(r"--stop-timeout (\d+)", run)
        # the embedded PostgreSQL stops after the daemon: its fast shutdown (a checkpoint) needs time too
        assert timeout is not None and int(timeout[1]) >= bound + 20, run


def test_the_image_makes_no_volume_of_its_own() -> None:
    """A `VOLUME` gives every container an anonymous volume, unused with an external database."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"^VOLUME", dockerfile, re.MULTILINE)
    assert "-v mana-ai-state:/var/lib/mana-ai/state" in (ROOT / "README.md").read_text()


LOCK = ROOT / "requirements.lock"


def _locked() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[\w.!+]+", version), f"not an exact pin: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def _direct() -> list[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["tracing"]]


def test_the_lock_pins_every_direct_dependency_where_pyproject_allows() -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = _locked()
    for line in _direct():
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (line, pins[name])


def test_the_lock_pins_every_transitive_dependency() -> None:
    """Walked through the installed packages' metadata (the test environment installs the same
    direct pins): a dependency new in a release shows here until the lock is regenerated."""
    from importlib.metadata import PackageNotFoundError, requires
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins, seen = _locked(), set()
    todo = [Requirement(line) for line in _direct()]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen or (requirement.marker is not None and not requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in requires(requirement.name) or []]
        except PackageNotFoundError:
            pass  # not installed here (another platform's); the lock is checked by name below
    assert sorted(seen - set(pins)) == []
    assert sorted(set(pins) - seen) == []  # nothing stale


def test_the_image_installs_from_the_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY .*\brequirements\.lock\b", dockerfile, re.MULTILINE)
    assert re.search(r'pip wheel .*--constraint requirements\.lock .*"\.\[tracing\]"', dockerfile)
    assert re.search(r"pip install .*--no-index", dockerfile)  # only the wheels built from the lock
    assert "deploy/lock.sh" in LOCK.read_text()  # says how to regenerate it
