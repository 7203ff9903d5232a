"""Settings: resolved once, from `KEYWATCH_*` environment variables and `.env`, into a frozen object.

This is the only module that reads the environment. Everything else receives a `Settings`
instance (or a part of it). Secrets are `SecretStr`; each may also be given as a file path in
`KEYWATCH_<NAME>_FILE` (for Docker/Kubernetes secrets), so a secret need never sit in the
environment.

>>> s = Settings.from_env({"KEYWATCH_DATA_DIR": "/tmp/kw"})
>>> s.data_dir.as_posix(), s.input_topic, s.embedded_kafka
('/tmp/kw', 'keywatch.events', True)
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "KEYWATCH_"


class SettingsError(ValueError):
    """Raised at start when a setting is invalid; the message names the setting."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True, case_sensitive=False
    )

    # --- contract §3 -------------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(None, description="Kafka bootstrap servers; unset = embedded broker")
    clickhouse_dsn: SecretStr | None = Field(None, description="clickhouse-connect DSN; unset = embedded chDB")
    data_dir: Path = Field(Path(".keywatch"), description="where embedded state lives")

    # --- stream ------------------------------------------------------------------------------
    input_topic: str = "keywatch.events"
    dlq_topic: str = "keywatch.dlq"
    alerts_topic: str = "keywatch.alerts"
    topic_partitions: int = Field(4, ge=1, le=1024)
    batch_max_messages: int = Field(500, ge=1, le=100_000)
    batch_max_seconds: float = Field(0.5, gt=0, le=60)
    max_message_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    max_events_per_message: int = Field(10_000, ge=1)
    dlq_payload_max_bytes: int = Field(4096, ge=64, le=1_048_576)
    max_future_skew_s: float = Field(3600.0, ge=0, description="worker: reject events this far ahead of wall clock")
    worker_id: str = "keywatch-worker"
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=0, le=65535)
    api_token: SecretStr | None = Field(None, description="bearer token for mutating HTTP API endpoints")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # --- ClickHouse --------------------------------------------------------------------------
    clickhouse_database: str = Field("keywatch", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    usage_ttl_days: int = Field(180, ge=1)
    alerts_ttl_days: int = Field(730, ge=1)
    dead_letters_ttl_days: int = Field(30, ge=1)
    scores_ttl_days: int = Field(90, ge=1)

    # --- secrets and identity ----------------------------------------------------------------
    key_hash_secret: SecretStr = Field(
        SecretStr("keywatch-default-fingerprint-key"),
        description="HMAC key for fingerprints of secret-looking key ids; set your own in production",
    )

    # --- configuration files (YAML) ----------------------------------------------------------
    prices_file: Path | None = Field(None, description="price overrides, merged over the bundled table")
    budgets_file: Path | None = None
    channels_file: Path | None = None
    revocation_policy_file: Path | None = None

    # --- detection ---------------------------------------------------------------------------
    incident_quiet_s: float = Field(3600.0, gt=0, description="an incident closes after this much quiet")
    dedupe_window_events: int = Field(200_000, ge=0, description="event ids remembered for dedupe")
    cost_spike_min_usd: float = Field(5.0, ge=0)
    cost_spike_min_pct: float = Field(50.0, ge=0)
    key_idle_expire_s: float = Field(7 * 86400.0, gt=0)

    # --- Grafana -----------------------------------------------------------------------------
    grafana_url: str = "http://127.0.0.1:3000"
    grafana_token: SecretStr | None = None

    # --- section: revocation (issue 5) -------------------------------------------------------
    # --- section: channels (issue 4) ---------------------------------------------------------
    # --- section: connectors (issue 7) -------------------------------------------------------

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        # `from_env` reads the process environment itself (one place); `.env` fills the rest.
        return (init_settings, dotenv_settings)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().absolute()

    @property
    def embedded_kafka(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse_dsn is None

    def secret(self, name: str) -> str | None:
        """The plain value of a secret setting, for the one call that needs it. Never log it."""
        value = getattr(self, name)
        return None if value is None else value.get_secret_value()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Resolve settings; `KEYWATCH_<NAME>_FILE` supplies a value from a file.

        Raises `SettingsError` naming the first bad setting, e.g. ``KEYWATCH_TOPIC_PARTITIONS``.
        """
        env = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for var, path in env.items():
            up = var.upper()
            if up.startswith(ENV_PREFIX) and up.endswith("_FILE") and up[len(ENV_PREFIX):-5].lower() in cls.model_fields:
                try:
                    values[up[len(ENV_PREFIX):-5].lower()] = Path(path).read_text().strip()
                except OSError as exc:
                    raise SettingsError(f"{up}: cannot read {path}: {exc.strerror}") from None
        for var, raw in env.items():
            up = var.upper()
            if up.startswith(ENV_PREFIX) and up[len(ENV_PREFIX):].lower() in cls.model_fields:
                values.setdefault(up[len(ENV_PREFIX):].lower(), raw)
        values.update(overrides)
        try:
            # The environment is merged above; pydantic-settings adds `.env` only for the real
            # process environment (an explicit `environ`, as in tests, stands alone).
            if environ is not None:
                return cls(_env_file=None, **values)
            return cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            name = ENV_PREFIX + str(err["loc"][0]).upper() if err["loc"] else "KEYWATCH_?"
            raise SettingsError(f"{name}: {err['msg']} (got {_redact(name, err.get('input'))})") from None


def _redact(name: str, value: Any) -> str:
    if any(s in name[len(ENV_PREFIX):] for s in ("SECRET", "TOKEN", "PASSWORD", "DSN", "KEY")):
        return "<redacted>"
    return repr(value)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, resolved once."""
    return Settings.from_env()
