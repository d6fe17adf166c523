"""Settings from the environment: reference names and defaults, one clear line per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from settings import ConfigError, load_settings


def test_defaults_are_the_reference_ones() -> None:
    s = load_settings({})
    assert (s.port, s.mana_llm_url, s.mana_api_url, s.service_key, s.tick_interval_ms, s.tick_enabled) == (
        3067, "http://localhost:3020", "http://localhost:3060", "dev-service-key", 60000, True)
    assert s.sync_database_url is None and s.embedded and s.notify
    assert (s.llm_model, s.llm_timeout_s, s.llm_concurrency, s.llm_retries, s.max_attempts) == (
        "gpt-4o-mini", 120.0, 8, 2, 5)
    assert s.state_dir == Path(".mana-ai") and s.jwt_audience == "mana"


def test_empty_strings_mean_unset() -> None:
    s = load_settings({"PORT": "", "SYNC_DATABASE_URL": "", "MANA_SERVICE_KEY": "", "TICK_ENABLED": ""})
    assert s.port == 3067 and s.sync_database_url is None and s.service_key == "dev-service-key" and s.tick_enabled


@pytest.mark.parametrize(("value", "enabled"), [
    ("false", False), ("False", False), ("FALSE", False), ("0", False), ("no", False), (" No ", False),
    ("true", True), ("True", True), ("1", True), ("yes", True), ("YES", True)])
def test_tick_enabled_takes_the_usual_spellings_in_any_case(value: str, enabled: bool) -> None:
    # the reference took every value but the exact string "false" as on: False kept it running
    assert load_settings({"TICK_ENABLED": value}).tick_enabled is enabled


@pytest.mark.parametrize("value", ["off", "disabled", "2", "nein"])
def test_tick_enabled_refuses_anything_else(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"TICK_ENABLED": value})
    assert str(caught.value) == f"TICK_ENABLED={value!r} is invalid: expected true|false|1|0|yes|no"


@pytest.mark.parametrize(("name", "hint"), [
    ("MANA_LLM_URL", "set the LLM's key in MANA_AI_LLM_API_KEY"),
    ("MANA_API_URL", "set mana-api's token in MANA_AI_RESEARCH_TOKEN"),
    ("MANA_RESEARCH_URL", "set mana-research's key in MANA_AI_RESEARCH_SERVICE_KEY"),
])
def test_a_url_with_credentials_is_refused_without_echoing_them(name: str, hint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({name: "https://apikey:sk-live-123@llm.example.com/v1"})
    assert str(caught.value) == f"{name} must not contain credentials (user:password@): {hint}"
    assert "sk-live-123" not in str(caught.value) and "apikey" not in str(caught.value)


def test_the_llm_key_is_its_own_setting_and_never_the_service_key() -> None:
    assert load_settings({"MANA_SERVICE_KEY": "internal-service-key"}).llm_api_key is None
    assert load_settings({"MANA_AI_LLM_API_KEY": "sk-1"}).llm_api_key == "sk-1"
    with pytest.raises(ConfigError) as caught:
        load_settings({"MANA_AI_LLM_API_KEY": "sk 1"})
    assert str(caught.value) == "MANA_AI_LLM_API_KEY is invalid: expected an API key (no spaces)"


def test_notify_defaults_on_only_in_embedded_mode() -> None:
    external = {"SYNC_DATABASE_URL": "postgresql://u:p@db/mana_sync"}
    assert load_settings(external).notify is False
    assert load_settings({**external, "MANA_AI_NOTIFY": "true"}).notify is True
    assert load_settings({"MANA_AI_NOTIFY": "false"}).notify is False


def test_the_response_format_is_none_unless_set() -> None:
    assert load_settings({}).llm_response_format == "none"
    assert load_settings({"MANA_AI_LLM_RESPONSE_FORMAT": ""}).llm_response_format == "none"
    for value in ("none", "json_object", "json_schema", "json_object_schema"):
        assert load_settings({"MANA_AI_LLM_RESPONSE_FORMAT": value}).llm_response_format == value


def test_instance_id_is_unique_per_start_unless_set() -> None:
    assert load_settings({}).instance_id != load_settings({}).instance_id
    assert load_settings({"MANA_AI_INSTANCE_ID": "blue"}).instance_id == "blue"


@pytest.mark.parametrize(("env", "message"), [
    ({"PORT": "eighty"}, "PORT='eighty' is invalid: expected an integer >= 1 and <= 65535"),
    ({"PORT": "70000"}, "PORT='70000' is invalid: expected an integer >= 1 and <= 65535"),
    ({"TICK_INTERVAL_MS": "10"}, "TICK_INTERVAL_MS='10' is invalid: expected an integer >= 100"),
    ({"MANA_LLM_URL": "ftp://x"}, "MANA_LLM_URL='ftp://x' is invalid: expected an http:// or https:// URL"),
    ({"MANA_AI_LLM_TIMEOUT_S": "nan"}, "MANA_AI_LLM_TIMEOUT_S='nan' is invalid: expected a number of seconds >= 0.1"),
    ({"MANA_AI_LOG_FORMAT": "xml"}, "MANA_AI_LOG_FORMAT='xml' is invalid: expected text|json"),
    ({"MANA_AI_NOTIFY": "yes"}, "MANA_AI_NOTIFY='yes' is invalid: expected true|false"),
    ({"MANA_AI_TYPO": "1"}, "MANA_AI_TYPO is not a known setting (see docs/configuration.md)"),
    ({"MANA_AI_MAX_JSON_DEPTH": "2000"},
     "MANA_AI_MAX_JSON_DEPTH='2000' is invalid: expected an integer >= 16 and <= 512"),
    ({"MANA_AI_MAX_STRING_BYTES": "64k"},
     "MANA_AI_MAX_STRING_BYTES='64k' is invalid: expected an integer >= 1024 and <= 67108864"),
    ({"MANA_AI_MAX_ID_CHARS": "1000"}, "MANA_AI_MAX_ID_CHARS='1000' is invalid: expected an integer >= 16 and <= 256"),
    ({"MANA_AI_MAX_ROW_BYTES": "0"},
     "MANA_AI_MAX_ROW_BYTES='0' is invalid: expected an integer >= 65536 and <= 268435455"),
    ({"MANA_AI_PLANNER": "agentic"}, "MANA_AI_PLANNER='agentic' is invalid: expected json|tools"),
    ({"MANA_AI_PLANNER_MAX_ROUNDS": "0"},
     "MANA_AI_PLANNER_MAX_ROUNDS='0' is invalid: expected an integer >= 1 and <= 20"),
    ({"MANA_AI_PLANNER_MAX_STEPS": "many"},
     "MANA_AI_PLANNER_MAX_STEPS='many' is invalid: expected an integer >= 1 and <= 100"),
    ({"MANA_AI_LLM_RESPONSE_FORMAT": "json"},
     "MANA_AI_LLM_RESPONSE_FORMAT='json' is invalid: expected none|json_object|json_schema|json_object_schema"),
])
def test_a_bad_value_names_the_variable_and_what_was_expected(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert str(caught.value) == message


def test_row_bounds_default_and_can_be_set() -> None:
    s = load_settings({})
    assert (s.max_json_depth, s.max_string_bytes, s.max_id_chars, s.max_row_bytes) == (64, 65536, 256, 8388608)
    s = load_settings({"MANA_AI_MAX_JSON_DEPTH": "32", "MANA_AI_MAX_STRING_BYTES": "1048576",
                       "MANA_AI_MAX_ID_CHARS": "128", "MANA_AI_MAX_ROW_BYTES": "65536"})
    assert (s.max_json_depth, s.max_string_bytes, s.max_id_chars, s.max_row_bytes) == (32, 1048576, 128, 65536)


def test_secret_values_are_never_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"SYNC_DATABASE_URL": "mysql://root:hunter2@db"})
    assert "hunter2" not in str(caught.value)
    assert str(caught.value) == "SYNC_DATABASE_URL is invalid: expected a postgres:// or postgresql:// URL"


def test_the_development_service_key_is_flagged_and_served_on_loopback_only(caplog: pytest.LogCaptureFixture) -> None:
    from supervisor import warn_about_defaults

    with caplog.at_level("WARNING"):
        for env in ({}, {"SYNC_DATABASE_URL": "postgresql://db/mana_sync"}, {"MANA_SERVICE_KEY": "dev-service-key"}):
            caplog.clear()
            settings = load_settings(env)
            assert settings.default_service_key and settings.bind_host == "127.0.0.1"
            settings.check_serving()  # loopback: allowed
            warn_about_defaults(settings)
            [record] = caplog.records
            assert record.getMessage() == "config.default_service_key" and record.host == "127.0.0.1"  # type: ignore[attr-defined]
            assert "MANA_SERVICE_KEY" in record.detail  # type: ignore[attr-defined]
        caplog.clear()
        settings = load_settings({"SYNC_DATABASE_URL": "postgresql://db/x", "MANA_SERVICE_KEY": "s3cret-s3cret-s3cret"})
        assert settings.bind_host == "0.0.0.0"
        settings.check_serving()
        warn_about_defaults(settings)
        assert not caplog.records


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_the_development_service_key_may_serve_an_explicit_loopback_address(host: str) -> None:
    settings = load_settings({"MANA_AI_HOST": host})
    assert settings.bind_host == host
    settings.check_serving()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "mana-ai.internal"])
@pytest.mark.parametrize("key", [None, "dev-service-key"])
def test_the_development_service_key_never_serves_other_machines(host: str, key: str | None) -> None:
    env = {"MANA_AI_HOST": host, **({"MANA_SERVICE_KEY": key} if key else {})}
    settings = load_settings(env)
    with pytest.raises(ConfigError) as caught:
        settings.check_serving()
    assert str(caught.value) == (
        f"MANA_SERVICE_KEY is not set (or is the public development default) and MANA_AI_HOST={host} would serve"
        " other machines: set MANA_SERVICE_KEY to a secret of at least 16 characters (for example"
        " `openssl rand -hex 32`), or unset MANA_AI_HOST to serve 127.0.0.1 only")
    assert load_settings({**env, "MANA_SERVICE_KEY": "a-secret-of-16-c"}).bind_host == host


@pytest.mark.parametrize("key", ["k", "s3cret", "fifteen-chars!!"])
def test_a_short_service_key_is_refused_without_echoing_it(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"MANA_SERVICE_KEY": key})
    assert str(caught.value) == ("MANA_SERVICE_KEY is too short: use at least 16 characters"
                                 " (for example `openssl rand -hex 32`)")
    assert load_settings({"MANA_SERVICE_KEY": key + "x" * (16 - len(key))}).service_key.startswith(key)


def test_the_planner_defaults_to_json_and_can_be_switched() -> None:
    s = load_settings({})
    assert (s.planner, s.planner_max_rounds, s.planner_max_steps) == ("json", 5, 25)
    s = load_settings({"MANA_AI_PLANNER": "Tools", "MANA_AI_PLANNER_MAX_ROUNDS": "3",
                       "MANA_AI_PLANNER_MAX_STEPS": "10"})
    assert (s.planner, s.planner_max_rounds, s.planner_max_steps) == ("tools", 3, 10)


def test_llm_max_tokens_is_unset_by_default_and_a_positive_integer() -> None:
    assert load_settings({}).llm_max_tokens is None
    assert load_settings({"MANA_AI_LLM_MAX_TOKENS": ""}).llm_max_tokens is None
    assert load_settings({"MANA_AI_LLM_MAX_TOKENS": " 2048 "}).llm_max_tokens == 2048
    for bad in ("0", "-5", "lots", "1.5"):
        with pytest.raises(ConfigError) as caught:
            load_settings({"MANA_AI_LLM_MAX_TOKENS": bad})
        assert str(caught.value) == (f"MANA_AI_LLM_MAX_TOKENS={bad!r} is invalid: "
                                     "expected an integer >= 1 and <= 1000000")


def test_deep_research_is_opt_in_with_its_own_key() -> None:
    s = load_settings({})
    assert (s.deep_research, s.mana_research_url, s.research_service_key, s.deep_research_max_age_min,
            s.deep_research_poll_s) == (False, None, None, 120, 30.0)
    s = load_settings({"MANA_AI_DEEP_RESEARCH": "TRUE", "MANA_RESEARCH_URL": "http://mana-research:3068/",
                       "MANA_AI_RESEARCH_SERVICE_KEY": "rk-1", "MANA_AI_DEEP_RESEARCH_MAX_AGE_MIN": "30",
                       "MANA_AI_DEEP_RESEARCH_POLL_S": "0", "MANA_SERVICE_KEY": "internal-service-key"})
    assert (s.deep_research, s.mana_research_url, s.research_service_key, s.deep_research_max_age_min,
            s.deep_research_poll_s) == (True, "http://mana-research:3068", "rk-1", 30, 0.0)
    assert "rk-1" in s.secrets() and "internal-service-key" in s.secrets()
    assert load_settings({"MANA_SERVICE_KEY": "internal-service-key"}).research_service_key is None  # never borrowed


@pytest.mark.parametrize(("env", "message"), [
    ({"MANA_AI_DEEP_RESEARCH": "yes"}, "MANA_AI_DEEP_RESEARCH='yes' is invalid: expected true|false"),
    ({"MANA_AI_DEEP_RESEARCH_MAX_AGE_MIN": "0"},
     "MANA_AI_DEEP_RESEARCH_MAX_AGE_MIN='0' is invalid: expected an integer >= 1 and <= 10080"),
    ({"MANA_AI_RESEARCH_SERVICE_KEY": "a b"},
     "MANA_AI_RESEARCH_SERVICE_KEY is invalid: expected mana-research's service key (no spaces)"),
    ({"MANA_AI_DEEP_RESEARCH": "true", "MANA_AI_DEEP_RESEARCH_ENABLED": "false"},
     "MANA_AI_DEEP_RESEARCH and MANA_AI_DEEP_RESEARCH_ENABLED disagree: set one of them"),
])
def test_deep_research_settings_are_checked(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert str(caught.value) == message


def test_the_references_switch_name_is_accepted() -> None:
    assert load_settings({"MANA_AI_DEEP_RESEARCH_ENABLED": "true"}).deep_research
    assert load_settings({"MANA_AI_DEEP_RESEARCH_ENABLED": "true", "MANA_AI_DEEP_RESEARCH": "true"}).deep_research


def test_retention_defaults_and_zero_keeps_forever() -> None:
    s = load_settings({})
    assert (s.runs_retention_days, s.dead_runs_retention_days, s.audit_retention_days,
            s.rejected_retention_days) == (30, 180, 400, 30)
    assert s.audit_retention_days > 365  # a user's audit trail covers at least a whole year
    s = load_settings({"MANA_AI_RUNS_RETENTION_DAYS": "7", "MANA_AI_DEAD_RUNS_RETENTION_DAYS": "0",
                       "MANA_AI_AUDIT_RETENTION_DAYS": "730", "MANA_AI_REJECTED_RETENTION_DAYS": " 1 "})
    assert (s.runs_retention_days, s.dead_runs_retention_days, s.audit_retention_days,
            s.rejected_retention_days) == (7, 0, 730, 1)
    assert load_settings({"MANA_AI_AUDIT_RETENTION_DAYS": ""}).audit_retention_days == 400  # empty: unset


@pytest.mark.parametrize("name", ["MANA_AI_RUNS_RETENTION_DAYS", "MANA_AI_DEAD_RUNS_RETENTION_DAYS",
                                  "MANA_AI_AUDIT_RETENTION_DAYS", "MANA_AI_REJECTED_RETENTION_DAYS"])
@pytest.mark.parametrize("value", ["-1", "30d", "1.5", "36501"])
def test_a_bad_retention_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value})
    expected = "a number of days >= 0 and <= 36500 (0 keeps forever)"
    assert str(caught.value) == f"{name}={value!r} is invalid: expected {expected}"


def test_spend_caps_are_unset_by_default_and_zero_blocks() -> None:
    s = load_settings({})
    assert (s.user_max_tokens_per_day, s.max_tokens_per_day) == (None, None)
    s = load_settings({"MANA_AI_USER_MAX_TOKENS_PER_DAY": "200000", "MANA_AI_MAX_TOKENS_PER_DAY": " 0 "})
    assert (s.user_max_tokens_per_day, s.max_tokens_per_day) == (200_000, 0)
    assert load_settings({"MANA_AI_MAX_TOKENS_PER_DAY": ""}).max_tokens_per_day is None  # empty: unset


@pytest.mark.parametrize("name", ["MANA_AI_USER_MAX_TOKENS_PER_DAY", "MANA_AI_MAX_TOKENS_PER_DAY"])
@pytest.mark.parametrize("value", ["-1", "1e6", "lots", "1.5"])
def test_a_bad_spend_cap_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value})
    assert str(caught.value) == f"{name}={value!r} is invalid: expected an integer >= 0"
