"""The daemon's configuration: read once from the environment into a frozen `Settings`.

Names and defaults of the reference are kept (reference-v0.6 §1.5); our own settings are
prefixed `MANA_AI_`. An empty string means "unset" (the reference crashed on it). A value
that does not parse stops start-up with one `ConfigError` line naming the variable.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["ConfigError", "Settings", "load_settings", "KNOWN_VARIABLES", "DEFAULT_SERVICE_KEY"]

DEFAULT_SERVICE_KEY = "dev-service-key"  # public (README): with it, the daemon serves loopback only
MIN_SERVICE_KEY_CHARS = 16
LOOPBACK_HOST = "127.0.0.1"

class ConfigError(Exception):
    """A configuration variable has a value the daemon cannot use."""


class _Refused(ValueError):
    """A value refused for a reason of its own; the message replaces "expected …" and never
    contains the value."""


@dataclass(frozen=True)
class Settings:
    port: int = 3067
    sync_database_url: str | None = None
    mana_llm_url: str = "http://localhost:3020"
    llm_api_key: str | None = None  # MANA_AI_LLM_API_KEY: the LLM's own credential; never the service key
    mana_api_url: str = "http://localhost:3060"
    service_key: str = DEFAULT_SERVICE_KEY
    tick_interval_ms: int = 60_000
    tick_enabled: bool = True
    private_key_pem: str | None = None
    mana_auth_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str = "mana"
    # ours
    llm_model: str = "gpt-4o-mini"
    llm_timeout_s: float = 120.0
    llm_concurrency: int = 8
    llm_retries: int = 2
    llm_max_tokens: int | None = None  # MANA_AI_LLM_MAX_TOKENS: unset, requests carry no max_tokens
    # MANA_AI_LLM_RESPONSE_FORMAT: the json planner's structured output (planner/plan_schema.py);
    # "none" sends no response_format (the reference's body)
    llm_response_format: str = "none"
    instance_id: str = ""
    lease_s: float = 300.0
    max_attempts: int = 5
    grace_s: float = 10.0
    state_dir: Path = Path(".mana-ai")
    snapshot_lag_ms: int = 5_000
    cycle_timeout_s: float = 600.0
    db_pool_size: int = 10
    db_connect_timeout_s: float = 30.0
    mailbox_size: int = 32
    dispatch_limit: int = 1000
    usage_retention_h: int = 48
    # rolling 24 h token caps above the agent's own budget (docs/operations.md "Token budgets"); None: no cap
    user_max_tokens_per_day: int | None = None  # MANA_AI_USER_MAX_TOKENS_PER_DAY: per user
    max_tokens_per_day: int | None = None       # MANA_AI_MAX_TOKENS_PER_DAY: the whole deployment
    # retention in days (docs/operations.md "Retention"); 0 keeps forever
    runs_retention_days: int = 30        # planned and discarded run-ledger slots
    dead_runs_retention_days: int = 180  # dead slots never discarded (the console offers Retry)
    audit_retention_days: int = 400      # a user's own decrypt-audit trail: over a year
    rejected_retention_days: int = 30    # records of skipped sync_changes rows
    research_token: str | None = None  # MANA_AI_RESEARCH_TOKEN: web research only when set
    # deep research (docs/operations.md "Deep research"): mana-research's URL and its own key
    deep_research: bool = False  # MANA_AI_DEEP_RESEARCH: submit new jobs
    mana_research_url: str | None = None  # MANA_RESEARCH_URL
    research_service_key: str | None = None  # MANA_AI_RESEARCH_SERVICE_KEY: mana-research's X-Service-Key
    deep_research_max_age_min: int = 120
    deep_research_poll_s: float = 30.0  # a parked mission is due (and its job polled) again after this
    otlp_endpoint: str | None = None  # OTEL_EXPORTER_OTLP_ENDPOINT: tracing only when set
    notify_setting: bool | None = None  # MANA_AI_NOTIFY; unset: on in embedded mode
    retry_base_s: float = 30.0
    retry_max_s: float = 3600.0
    log_format: str = "text"
    log_level: str = "INFO"
    host: str | None = None  # MANA_AI_HOST; unset: see `bind_host`
    cors_origins: tuple[str, ...] = ()  # MANA_AI_CORS_ORIGINS: browser origins of the audit endpoint
    # bounds a sync_changes row must respect to be folded (store/bounds.py); others are rejected
    max_json_depth: int = 64
    max_string_bytes: int = 65_536
    max_id_chars: int = 256
    max_row_bytes: int = 8_388_608
    # the planner (docs/planner-tools.md): "json" is the v0.6 text-JSON planner, "tools" native tool calls
    planner: str = "json"
    planner_max_rounds: int = 5
    planner_max_steps: int = 25
    # MANA_AI_SYNC_SCHEMA: the sync_changes generation an embedded database is created with
    embedded_sync_schema: str = "v0.6"

    def secrets(self) -> tuple[str, ...]:
        """Every credential in the configuration, to keep them out of errors and logs."""
        found = [self.service_key, self.llm_api_key, self.research_token, self.research_service_key]
        if self.sync_database_url is not None:
            try:
                found.append(urlsplit(self.sync_database_url).password)
            except ValueError:
                pass
        if self.private_key_pem is not None:  # any line of the key's body
            found += [line.strip() for line in self.private_key_pem.replace("\\n", "\n").splitlines()
                      if line.strip() and not line.startswith("-----")]
        return tuple(s for s in found if s)

    @property
    def default_service_key(self) -> bool:
        """MANA_SERVICE_KEY unset, or set to the development default the README publishes."""
        return self.service_key == DEFAULT_SERVICE_KEY

    @property
    def bind_host(self) -> str:
        """The address to serve on: MANA_AI_HOST; unset, every interface (0.0.0.0), or only
        127.0.0.1 while the service key is the development default."""
        if self.host is not None:
            return self.host
        return LOOPBACK_HOST if self.default_service_key else "0.0.0.0"

    def check_serving(self) -> None:
        """Refuse (ConfigError) to serve other machines under the development service key."""
        if self.default_service_key and not _loopback(self.bind_host):
            raise ConfigError(
                f"MANA_SERVICE_KEY is not set (or is the public development default) and MANA_AI_HOST={self.bind_host}"
                f" would serve other machines: set MANA_SERVICE_KEY to a secret of at least {MIN_SERVICE_KEY_CHARS}"
                f" characters (for example `openssl rand -hex 32`), or unset MANA_AI_HOST to serve {LOOPBACK_HOST} only")

    @property
    def embedded(self) -> bool:
        return self.sync_database_url is None

    @property
    def notify(self) -> bool:
        """Whether to install the NOTIFY trigger and listen (a latency hint; polling stays)."""
        return self.embedded if self.notify_setting is None else self.notify_setting

    @property
    def tick_interval_s(self) -> float:
        return self.tick_interval_ms / 1000

    @property
    def snapshot_lag_s(self) -> float:
        return self.snapshot_lag_ms / 1000


@dataclass(frozen=True)
class _Var:
    attr: str
    parse: Callable[[str], object]
    expected: str
    secret: bool = False  # never echo the value (passwords in DSNs, keys)


def _int(lo: int, hi: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw.strip())
        if value < lo or (hi is not None and value > hi):
            raise ValueError
        return value
    return parse


def _int_expected(lo: int, hi: int | None = None) -> str:
    return f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")


def _float(lo: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw.strip())
        if not lo <= value < float("inf"):
            raise ValueError
        return value
    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError
        return value
    return parse


def _prefixed(*prefixes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().rstrip("/")
        if not value.startswith(prefixes):
            raise ValueError
        return value
    return parse


def _http_url(where_credentials_go: str) -> Callable[[str], str]:
    """An http(s) URL without userinfo: the upstream's credential has a setting of its own
    (a password in a URL ends up in logs, errors and Basic auth headers)."""
    def parse(raw: str) -> str:
        value = _prefixed("http://", "https://")(raw)
        if "@" in urlsplit(value).netloc:
            raise _Refused(f"must not contain credentials (user:password@): {where_credentials_go}")
        return value
    return parse


def _text(raw: str) -> str:
    return raw


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def _service_key(raw: str) -> str:
    """The development default, or a key long enough not to be guessed."""
    if raw != DEFAULT_SERVICE_KEY and len(raw) < MIN_SERVICE_KEY_CHARS:
        raise _Refused(f"is too short: use at least {MIN_SERVICE_KEY_CHARS} characters"
                       " (for example `openssl rand -hex 32`)")
    return raw


def _token(raw: str) -> str:
    value = raw.strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError
    return value


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("true", "false"):
        raise ValueError
    return value == "true"


def _origins(raw: str) -> tuple[str, ...]:
    """Comma-separated `http(s)://host[:port]` origins, as a browser sends them (no path, no `*`)."""
    origins = []
    for part in raw.split(","):
        origin = part.strip().rstrip("/").lower()
        if not origin:
            continue
        scheme, sep, authority = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not authority or any(c in authority for c in "/?#* "):
            raise ValueError
        origins.append(origin)
    return tuple(dict.fromkeys(origins))


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _tick_enabled(raw: str) -> bool:
    """true/false/1/0/yes/no in any case (the reference took every value but `false` as on)."""
    value = raw.strip().lower()
    if value not in _TRUE + _FALSE:
        raise ValueError
    return value in _TRUE


_URL = "an http:// or https:// URL"
_DAYS = "a number of days >= 0 and <= 36500 (0 keeps forever)"
_SPEC: dict[str, _Var] = {
    "PORT": _Var("port", _int(1, 65535), _int_expected(1, 65535)),
    "SYNC_DATABASE_URL": _Var("sync_database_url", _prefixed("postgres://", "postgresql://"),
                              "a postgres:// or postgresql:// URL", secret=True),
    "MANA_LLM_URL": _Var("mana_llm_url", _http_url("set the LLM's key in MANA_AI_LLM_API_KEY"), _URL),
    "MANA_AI_LLM_API_KEY": _Var("llm_api_key", _token, "an API key (no spaces)", secret=True),
    "MANA_API_URL": _Var("mana_api_url", _http_url("set mana-api's token in MANA_AI_RESEARCH_TOKEN"), _URL),
    "MANA_SERVICE_KEY": _Var("service_key", _service_key, "text", secret=True),
    "TICK_INTERVAL_MS": _Var("tick_interval_ms", _int(100), _int_expected(100)),
    "TICK_ENABLED": _Var("tick_enabled", _tick_enabled, "true|false|1|0|yes|no"),
    "MANA_AI_PRIVATE_KEY_PEM": _Var("private_key_pem", _text, "a PKCS#8 PEM", secret=True),
    "MANA_AUTH_URL": _Var("mana_auth_url", _http_url("mana-auth's JWKS is public and needs none"), _URL),
    "JWT_ISSUER": _Var("jwt_issuer", _text, "text"),
    "JWT_AUDIENCE": _Var("jwt_audience", _text, "text"),
    "MANA_AI_LLM_MODEL": _Var("llm_model", _text, "a model name"),
    "MANA_AI_LLM_TIMEOUT_S": _Var("llm_timeout_s", _float(0.1), "a number of seconds >= 0.1"),
    "MANA_AI_LLM_CONCURRENCY": _Var("llm_concurrency", _int(1, 1024), _int_expected(1, 1024)),
    "MANA_AI_LLM_RETRIES": _Var("llm_retries", _int(0, 10), _int_expected(0, 10)),
    "MANA_AI_LLM_MAX_TOKENS": _Var("llm_max_tokens", _int(1, 1_000_000), _int_expected(1, 1_000_000)),
    "MANA_AI_LLM_RESPONSE_FORMAT": _Var("llm_response_format",
                                        _choice("none", "json_object", "json_schema", "json_object_schema"),
                                        "none|json_object|json_schema|json_object_schema"),
    "MANA_AI_INSTANCE_ID": _Var("instance_id", _text, "text"),
    "MANA_AI_LEASE_S": _Var("lease_s", _float(1), "a number of seconds >= 1"),
    "MANA_AI_MAX_ATTEMPTS": _Var("max_attempts", _int(1, 100), _int_expected(1, 100)),
    "MANA_AI_GRACE_S": _Var("grace_s", _float(0), "a number of seconds >= 0"),
    "MANA_AI_STATE_DIR": _Var("state_dir", Path, "a directory path"),
    "MANA_AI_SNAPSHOT_LAG_MS": _Var("snapshot_lag_ms", _int(0, 600_000), _int_expected(0, 600_000)),
    "MANA_AI_CYCLE_TIMEOUT_S": _Var("cycle_timeout_s", _float(1), "a number of seconds >= 1"),
    "MANA_AI_DB_POOL_SIZE": _Var("db_pool_size", _int(2, 200), _int_expected(2, 200)),
    "MANA_AI_DB_CONNECT_TIMEOUT_S": _Var("db_connect_timeout_s", _float(0), "a number of seconds >= 0"),
    "MANA_AI_RESEARCH_TOKEN": _Var("research_token", _token, "a bearer token for mana-api (no spaces)",
                                   secret=True),
    "MANA_AI_DEEP_RESEARCH": _Var("deep_research", _bool, "true|false"),
    # the reference's name for the same switch, so its deployments start unchanged
    "MANA_AI_DEEP_RESEARCH_ENABLED": _Var("deep_research", _bool, "true|false"),
    "MANA_RESEARCH_URL": _Var("mana_research_url",
                              _http_url("set mana-research's key in MANA_AI_RESEARCH_SERVICE_KEY"), _URL),
    "MANA_AI_RESEARCH_SERVICE_KEY": _Var("research_service_key", _token,
                                         "mana-research's service key (no spaces)", secret=True),
    "MANA_AI_DEEP_RESEARCH_MAX_AGE_MIN": _Var("deep_research_max_age_min", _int(1, 10_080),
                                              _int_expected(1, 10_080)),
    "MANA_AI_DEEP_RESEARCH_POLL_S": _Var("deep_research_poll_s", _float(0), "a number of seconds >= 0"),
    "OTEL_EXPORTER_OTLP_ENDPOINT": _Var("otlp_endpoint", _http_url("set them in OTEL_EXPORTER_OTLP_HEADERS"), _URL),
    "MANA_AI_NOTIFY": _Var("notify_setting", _bool, "true|false"),
    "MANA_AI_USAGE_RETENTION_H": _Var("usage_retention_h", _int(25, 24 * 365), _int_expected(25, 24 * 365)),
    "MANA_AI_RUNS_RETENTION_DAYS": _Var("runs_retention_days", _int(0, 36_500), _DAYS),
    "MANA_AI_DEAD_RUNS_RETENTION_DAYS": _Var("dead_runs_retention_days", _int(0, 36_500), _DAYS),
    "MANA_AI_AUDIT_RETENTION_DAYS": _Var("audit_retention_days", _int(0, 36_500), _DAYS),
    "MANA_AI_REJECTED_RETENTION_DAYS": _Var("rejected_retention_days", _int(0, 36_500), _DAYS),
    "MANA_AI_DISPATCH_LIMIT": _Var("dispatch_limit", _int(1, 100_000), _int_expected(1, 100_000)),
    "MANA_AI_USER_MAX_TOKENS_PER_DAY": _Var("user_max_tokens_per_day", _int(0), _int_expected(0)),
    "MANA_AI_MAX_TOKENS_PER_DAY": _Var("max_tokens_per_day", _int(0), _int_expected(0)),
    "MANA_AI_MAILBOX_SIZE": _Var("mailbox_size", _int(1, 10_000), _int_expected(1, 10_000)),
    "MANA_AI_RETRY_BASE_S": _Var("retry_base_s", _float(0), "a number of seconds >= 0"),
    "MANA_AI_RETRY_MAX_S": _Var("retry_max_s", _float(0), "a number of seconds >= 0"),
    "MANA_AI_LOG_FORMAT": _Var("log_format", _choice("text", "json"), "text|json"),
    "MANA_AI_LOG_LEVEL": _Var("log_level", _choice("debug", "info", "warning", "error"),
                              "debug|info|warning|error"),
    "MANA_AI_HOST": _Var("host", _text, "an address to bind"),
    "MANA_AI_CORS_ORIGINS": _Var("cors_origins", _origins,
                                 "comma-separated http:// or https:// origins (scheme://host[:port])"),
    # json.loads recurses per level: past ~900 it raises, so the depth bound stays well below
    "MANA_AI_MAX_JSON_DEPTH": _Var("max_json_depth", _int(16, 512), _int_expected(16, 512)),
    "MANA_AI_MAX_STRING_BYTES": _Var("max_string_bytes", _int(1024, 67_108_864), _int_expected(1024, 67_108_864)),
    # ids are btree keys: 256 characters keep (user, mission, nextRunAt) under the 2704-byte row limit
    "MANA_AI_MAX_ID_CHARS": _Var("max_id_chars", _int(16, 256), _int_expected(16, 256)),
    "MANA_AI_MAX_ROW_BYTES": _Var("max_row_bytes", _int(65_536, 268_435_455), _int_expected(65_536, 268_435_455)),
    "MANA_AI_PLANNER": _Var("planner", _choice("json", "tools"), "json|tools"),
    "MANA_AI_PLANNER_MAX_ROUNDS": _Var("planner_max_rounds", _int(1, 20), _int_expected(1, 20)),
    "MANA_AI_PLANNER_MAX_STEPS": _Var("planner_max_steps", _int(1, 100), _int_expected(1, 100)),
    "MANA_AI_SYNC_SCHEMA": _Var("embedded_sync_schema", _choice("v0.6", "field-meta"), "v0.6|field-meta"),
}

KNOWN_VARIABLES = frozenset(_SPEC)


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build `Settings` from an environment mapping; the only reader of the environment."""
    values: dict[str, object] = {}
    for name, var in _SPEC.items():
        raw = environ.get(name)
        if raw is None or raw == "":
            continue
        try:
            values[var.attr] = var.parse(raw)
        except _Refused as exc:
            raise ConfigError(f"{name} {exc}") from None
        except ValueError:
            shown = name if var.secret else f"{name}={raw!r}"
            raise ConfigError(f"{shown} is invalid: expected {var.expected}") from None
    switches = [environ.get(name) for name in ("MANA_AI_DEEP_RESEARCH", "MANA_AI_DEEP_RESEARCH_ENABLED")]
    if all(switches) and _bool(switches[0] or "") != _bool(switches[1] or ""):
        raise ConfigError("MANA_AI_DEEP_RESEARCH and MANA_AI_DEEP_RESEARCH_ENABLED disagree: set one of them")
    unknown = sorted(k for k in environ if k.startswith("MANA_AI_") and k not in KNOWN_VARIABLES)
    if unknown:
        raise ConfigError(f"{unknown[0]} is not a known setting (see docs/configuration.md)")
    if "log_level" in values:
        values["log_level"] = str(values["log_level"]).upper()
    if not values.get("instance_id"):
        # unique per process start, so a restarted daemon never mistakes old leases for its own
        values["instance_id"] = f"mana-ai-{uuid.uuid4().hex[:12]}"
    return Settings(**values)  # type: ignore[arg-type]
