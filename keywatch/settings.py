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
    input_topic: str= Field("keywatch.events", description='Kafka topic of canonical telemetry events')
    dlq_topic: str= Field("keywatch.dlq", description='Kafka topic that receives dead letters (bad input with the reason)')
    alerts_topic: str= Field("keywatch.alerts", description='Kafka topic that receives every new or updated alert (JSON)')
    # Workers of one group each learn only their keys' share of a project's population, which a
    # project's new keys are judged against; 0 turns the sharing off (models/keytheft_share.py).
    population_topic: str = Field("keywatch.populations", description="Kafka topic on which workers share what key theft's project populations learned (every worker reads all of it)")
    population_share_s: float = Field(5.0, ge=0, le=3600, description="worker: send what this worker's project populations learned, and learn other workers', this often (seconds); 0 = off")
    topic_partitions: int= Field(4, ge=1, le=1024, description='partitions of the input topic when keywatch creates it (scale-out unit)')
    placement: Literal["key", "project"] = Field("key", description="keywatch's producers (`ingest`, `poll`, `demo`, `simulate --kafka`): `key` = each key on its own partition (even load); `project` = each project's keys on one partition, so several workers keep key theft, project budgets and project spikes exact (provider- and model-level series stay per worker share; a project's whole load lands on one worker: for many projects)")
    # A batch pays fixed costs (an INSERT per table, ≈ 0.1 s on embedded chDB): one-event messages
    # need thousands per batch to spread them; the byte budget bounds batches of big messages.
    batch_max_messages: int= Field(10_000, ge=1, le=100_000, description='most Kafka messages the worker takes into one batch')
    batch_max_bytes: int= Field(8 * 1_048_576, ge=1024, le=1024 * 1_048_576, description='a batch is full at this many bytes of messages (one bigger message is a batch alone)')
    # 0.2 s: a batch that is not full goes this long after the worker asked for it (or after its
    # first message, if that came while the last batch was handled), so it adds directly to
    # event→alert latency (a backlog fills batches at once: no effect on throughput).
    batch_max_seconds: float= Field(0.2, gt=0, le=60, description='longest the worker waits to fill a batch')
    max_message_bytes: int= Field(1_048_576, ge=1024, le=64 * 1_048_576, description='larger Kafka messages / lines are dead letters (`oversized`)')
    max_events_per_message: int= Field(10_000, ge=1, description='more events in one JSON array are dead letters (`too_many_events`)')
    dlq_payload_max_bytes: int= Field(4096, ge=64, le=1_048_576, description='bytes of a bad payload kept in the dead letter')
    max_future_skew_s: float = Field(3600.0, ge=0, description="worker: reject events this far ahead of wall clock")
    worker_id: str= Field("keywatch-worker", description='faust app id = Kafka consumer group of the workers')
    # Scale-out without splitting projects: `keys` workers (any number, one group) run the
    # per-key detectors and store the events; one `projects` worker (its own group, every
    # partition) runs the project-level ones. Together they give what one `all` worker gives.
    worker_tier: Literal["all", "keys", "projects"] = Field("all", description="worker: `all` = every detector (one worker, or several with project-level detection judged per worker share); `keys` = per-key detection, events and dead letters stored (scale out in one group); `projects` = project/provider-level detection only, in group `<KEYWATCH_WORKER_ID>-projects` (run one)")
    worker_instance: str = Field("", pattern=r"^[A-Za-z0-9_.\-]{0,64}$", description="a stable name per worker process when several run in one group (e.g. the StatefulSet pod name): each restores its own project-level snapshot; empty = one worker")
    web_host: str= Field("127.0.0.1", description="address of the worker's HTTP API (/health, /metrics, /alerts, …)")
    web_port: int= Field(6066, ge=0, le=65535, description="port of the worker's HTTP API")
    api_token: SecretStr | None = Field(None, description="bearer token for mutating HTTP API endpoints")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]= Field("INFO", description='logging level')
    snapshot_interval_s: float = Field(10.0, gt=0, le=3600, description="worker: snapshot detector state (and commit offsets) this often")
    # A snapshot pickles the cores (≈ 6 s at 100k keys; detection waits, or a forked child keeps
    # a core busy): spacing periodic ones by their own duration bounds that share of the time.
    snapshot_max_share: float = Field(0.1, gt=0, le=1, description="worker: periodic snapshots are spaced so that they take at most this share of the time (wider than KEYWATCH_SNAPSHOT_INTERVAL_S when state is big)")
    # Pickling ≈ 6 s at 100k keys stops detection for that long when done in the worker; a
    # forked child does it from a copy-on-write image while detection goes on (stream/snapfork.py).
    snapshot_fork: bool = Field(True, description="worker: take periodic snapshots in a forked child process (POSIX), so detection does not wait while the state is pickled; the child may copy up to the worker's resident memory while it runs, so it forks only while that much is available (else in process)")
    # A child pickles more slowly than the worker (copy-on-write page faults: 8.5 s against 5.4 s
    # at 100k keys) and competes for the cores: worth it only when the wait it saves is long.
    snapshot_fork_min_s: float = Field(1.0, ge=0, le=3600, description="worker: fork for snapshots once one has taken at least this long; smaller state is pickled in process (less CPU, a short wait); a worker's first snapshot is forked, its length not being known yet")
    # The worker allocates short-lived objects by the hundred thousand per second (events, rows,
    # insert columns) beside long-lived detector state: with Python's default (700) the collector
    # ran ≈ 1,400 times in a 400k-event run, its older generations re-scanning that state; 50,000
    # cut the worker's CPU per event by 11–16 % in three alternating pairs (docs/performance.md, session 7).
    gc_threshold: int = Field(50_000, ge=0, le=10_000_000, description="worker and `keywatch replay`: allocations between young-generation garbage collections (Python's default is 700); the worker also freezes its start-up objects out of the collector's scans; 0 = Python's defaults")
    memory_trim_s: float = Field(600.0, ge=0, description="worker: return freed heap memory to the OS this often (glibc malloc_trim; 1-3 ms); 0 = never")
    global_order_idle_s: float = Field(5.0, gt=0, le=3600, description="worker: project-level detection waits for every input partition's events up to the same event time; a partition that sent nothing for this many seconds no longer holds it back")
    global_order_max_pending: int = Field(1_000_000, ge=1000, description="worker: most events waiting for that cross-partition event-time order (the oldest go on beyond it)")
    sink_retry_max_s: float = Field(30.0, gt=0, description="worker: longest backoff between ClickHouse write retries")
    hook_queue_max: int = Field(10_000, ge=1, description="worker: alert batches queued for hooks before new ones are dropped")
    chaos_sink_fail_file: Path | None = Field(None, description="fault injection (tests, drills) only: while this file exists every ClickHouse write of the worker fails, as if the server were down")
    chaos_snapshot_delay_s: float = Field(0.0, ge=0, le=600, description="fault injection (tests, drills) only: a forked snapshot child waits this long first, as if the state were big")
    kafka_fetch_max_wait_ms: int = Field(100, ge=1, le=10_000, description="worker: longest a fetch waits at the broker for data (faust's own 1500 ms adds up to that much latency on brokers that hold fetches, like the embedded one)")
    kafka_rebalance_timeout_s: float | None = Field(None, gt=0, le=600, description="worker: consumer-group rebalance timeout (session timeout = 2x); unset = faust's defaults. Short values (1.5) make the embedded broker's group join fast")

    # --- ClickHouse --------------------------------------------------------------------------
    clickhouse_database: str= Field("keywatch", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", description='ClickHouse database keywatch creates and writes')
    usage_ttl_days: int= Field(180, ge=1, description='days usage/audit rows and rollups are kept')
    alerts_ttl_days: int= Field(730, ge=1, description='days alerts are kept')
    dead_letters_ttl_days: int= Field(30, ge=1, description='days dead letters are kept')
    scores_ttl_days: int= Field(90, ge=1, description='days per-key scores are kept')
    # `keywatch db serve`: the embedded chDB behind ClickHouse's HTTP interface, so several
    # processes (workers, CLI) share it with KEYWATCH_CLICKHOUSE_DSN=http://host:port
    chserver_host: str = Field("127.0.0.1", description="`keywatch db serve`: address to listen on")
    chserver_port: int = Field(8123, ge=0, le=65535, description="`keywatch db serve`: port (0 = a free port, printed at start)")
    chserver_user: str = Field("default", description="`keywatch db serve`: user clients must send when a password is set")
    chserver_connections: int = Field(4, ge=1, le=64, description="`keywatch db serve`: chDB connections, so that many requests run side by side (reads need not wait for inserts)")
    chserver_password: SecretStr | None = Field(None, description="`keywatch db serve`: password clients must send (basic auth or X-ClickHouse-Key); unset = no authentication, so listen on 127.0.0.1 only")

    # --- secrets and identity ----------------------------------------------------------------
    key_hash_secret: SecretStr = Field(
        SecretStr("keywatch-default-fingerprint-key"),
        description="HMAC key for fingerprints of secret-looking key ids; set your own in production",
    )

    # --- configuration files (YAML) ----------------------------------------------------------
    prices_file: Path | None = Field(None, description="price overrides, merged over the bundled table")
    budgets_file: Path | None= Field(None, description='YAML budgets per key/project with stepped thresholds')
    channels_file: Path | None= Field(None, description='YAML alert channels and routes (email, Slack, PagerDuty, webhook)')
    revocation_policy_file: Path | None= Field(None, description='YAML revocation policy (dry-run unless KEYWATCH_REVOCATION_ENABLED)')

    # --- detection ---------------------------------------------------------------------------
    incident_quiet_s: float = Field(3600.0, gt=0, description="an incident closes after this much quiet")
    dedupe_window_events: int = Field(200_000, ge=0, description="event ids remembered for dedupe")
    cost_spike_min_usd: float= Field(5.0, ge=0, description='a cost spike must exceed the forecast band by at least this many dollars')
    cost_spike_min_pct: float= Field(50.0, ge=0, description='… and by at least this percentage')
    key_idle_expire_s: float= Field(7 * 86400.0, gt=0, description='keys idle this long leave memory (baseline saved to ClickHouse)')
    key_cold_after_s: float = Field(3600.0, ge=0, description="keys idle (for cost spikes: without spend) this long keep their key-theft state and cost-spike rows packed, unpacked when next needed (0: never)")
    idle_spill_dir: str = Field("", description="directory (on disk, not tmpfs) for the temporary file that holds packed idle keys' state, one int a key left in memory; empty: the system temporary directory; memory: keep it in memory")
    # key theft (issue 3)
    keytheft_alert_min_score: float = Field(0.4, ge=0, le=1, description="key_theft findings below this risk raise no alert")
    # cost (issue 4): spike band, forecasts, budgets, billing reconciliation
    cost_spike_band_k: float = Field(4.0, gt=0, description="upper band = expected + k * robust spread")
    cost_spike_min_minutes: int = Field(2, ge=1, le=60, description="minutes above band before a cost_spike")
    cost_spike_warmup_s: float = Field(6 * 3600.0, ge=0, description="history a series needs before it can spike")
    cost_forecast_key_rows: bool = Field(False, description="also emit per-key spend_forecast rows every minute")
    budget_thresholds_pct: str = Field("50,80,100", description="default budget steps (comma-separated %)")
    billing_divergence_pct: float = Field(10.0, ge=0, description="billed vs computed, per project and day")
    billing_divergence_min_usd: float= Field(5.0, ge=0, description='a billing divergence must also exceed this many dollars')

    # --- Grafana -----------------------------------------------------------------------------
    grafana_url: str= Field("http://127.0.0.1:3000", description='Grafana base URL for `keywatch dashboards push`')
    grafana_token: SecretStr | None= Field(None, description='Grafana service-account token for `keywatch dashboards push`')

    # --- section: revocation (issue 5) -------------------------------------------------------
    # Rules, protected keys, limits and the circuit breaker live in `revocation_policy_file`
    # (see infra/revocation.example.yaml). Nothing is ever called at a provider unless this is true.
    revocation_enabled: bool = Field(False, description="false = dry run: decide and record, never call a provider")
    revocation_timeout_s: float = Field(10.0, gt=0, le=120, description="per provider request")
    revocation_max_attempts: int = Field(3, ge=1, le=10, description="tries on 429/5xx/timeouts")
    revocation_max_retry_wait_s: float = Field(30.0, ge=0, le=600, description="longest Retry-After honoured")
    revocation_approval_ttl_s: float = Field(86400.0, gt=0, description="pending approvals expire after this")
    revocation_openai_base_url: str= Field("https://api.openai.com", description='OpenAI Admin API base URL (revocation)')
    revocation_openai_admin_key: SecretStr | None= Field(None, description='OpenAI admin key used to delete project API keys')
    revocation_anthropic_base_url: str= Field("https://api.anthropic.com", description='Anthropic Admin API base URL (revocation)')
    revocation_anthropic_admin_key: SecretStr | None= Field(None, description='Anthropic admin key used to deactivate API keys')
    revocation_anthropic_version: str= Field("2023-06-01", description='anthropic-version header sent to the Admin API')
    revocation_aws_endpoint_url: str | None = Field(None, description="IAM endpoint (moto in tests); unset = AWS")
    revocation_aws_region: str= Field("us-east-1", description='AWS region for IAM calls')
    revocation_aws_access_key_id: SecretStr | None = Field(None, description="unset = boto3's default credential chain")
    revocation_aws_secret_access_key: SecretStr | None= Field(None, description='AWS secret access key for IAM calls (unset = default chain)')
    revocation_litellm_base_url: str | None= Field(None, description='LiteLLM proxy base URL (block virtual keys)')
    revocation_litellm_master_key: SecretStr | None= Field(None, description='LiteLLM master key')
    revocation_webhook_url: str | None = Field(None, description="in-house key manager; signed with HMAC-SHA256")
    revocation_webhook_secret: SecretStr | None= Field(None, description='HMAC-SHA256 secret for the revocation webhook')
    # --- section: channels (issue 4) ---------------------------------------------------------
    # Routes and destinations live in `channels_file` (see infra/channels.example.yaml); the
    # secrets a destination names with `*_setting:` come from here (or `KEYWATCH_<NAME>_FILE`).
    smtp_host: str | None = Field(None, description="SMTP server for email channels")
    smtp_port: int= Field(587, ge=1, le=65535, description='SMTP port')
    smtp_user: str | None= Field(None, description='SMTP login user (unset = no login)')
    smtp_password: SecretStr | None= Field(None, description='SMTP login password')
    smtp_from: str= Field("keywatch@localhost", description='From address of alert emails')
    smtp_starttls: bool = Field(True, description="upgrade with STARTTLS when the server offers it")
    smtp_ssl: bool = Field(False, description="implicit TLS (port 465)")
    slack_webhook_url: SecretStr | None = Field(None, description="default Slack incoming-webhook URL (it is a secret)")
    pagerduty_routing_key: SecretStr | None= Field(None, description='PagerDuty Events API v2 routing key')
    pagerduty_url: str= Field("https://events.pagerduty.com", description='PagerDuty Events API base URL')
    webhook_secret: SecretStr | None = Field(None, description="default HMAC-SHA256 secret for signed JSON webhooks")
    channels_link_template: str | None = Field(None, description="alert link, e.g. https://grafana/d/kw?var-alert={alert_id}")
    channels_timeout_s: float = Field(10.0, gt=0, le=300, description="per delivery attempt")
    channels_max_attempts: int= Field(5, ge=1, le=20, description='tries per delivery (429/5xx/timeouts are retried)')
    channels_backoff_s: float = Field(1.0, ge=0, le=60, description="first retry delay; doubles, with jitter")
    channels_backoff_max_s: float= Field(60.0, ge=0, le=3600, description='longest delay between delivery retries')
    channels_concurrency: int= Field(8, ge=1, le=256, description='deliveries in flight at once')
    # --- section: connectors (issue 7) -------------------------------------------------------
    openai_admin_key: SecretStr | None = Field(None, description="OpenAI admin key for `keywatch poll openai`")
    openai_base_url: str= Field("https://api.openai.com", description='OpenAI API base URL for `keywatch poll openai`')
    anthropic_admin_key: SecretStr | None = Field(None, description="Anthropic admin key for `keywatch poll anthropic`")
    anthropic_base_url: str= Field("https://api.anthropic.com", description='Anthropic API base URL for `keywatch poll anthropic`')
    poll_bucket_width: Literal["1m", "1h", "1d"]= Field("1m", description='bucket width requested from the usage APIs')
    poll_settle_s: float = Field(300.0, ge=0, description="poll only buckets that ended this long ago (still filling before)")
    poll_lookback_s: float = Field(86400.0, gt=0, description="first poll (no cursor) starts this far back")
    poll_interval_s: float= Field(60.0, gt=0, description='seconds between polls')
    poll_max_retries: int= Field(6, ge=0, le=50, description='retries of a failing poll request (429 Retry-After honoured)')
    poll_timeout_s: float= Field(30.0, gt=0, description='per poll request')
    connector_join_wait_s: float = Field(900.0, ge=0, description="Bedrock log ⋈ CloudTrail: wait this long for the partner record")
    gateway_key_map_file: Path | None = Field(None, description="YAML: gateway key hash → provider key_id")
    gateway_bypass_bucket_s: int= Field(3600, ge=60, description='bucket width in which provider usage is matched to gateway traffic')
    gateway_bypass_lag_s: float = Field(1800.0, ge=0, description="wait this long past a bucket for late gateway logs")
    gateway_bypass_min_requests: int= Field(5, ge=1, description='unmatched provider requests in a bucket before a gateway-bypass alert')
    gateway_bypass_retention_s: int = Field(259200, ge=3600, description="keep a key's buckets this long: provider usage arriving later is not matched")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        # `from_env` reads the process environment itself (one place); `.env` fills the rest.
        return (init_settings, dotenv_settings)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().absolute()

    @property
    def group_id(self) -> str:
        """The consumer group (faust app id) and the `worker_id` of state rows: the projects tier
        reads every partition, so it is a group of its own."""
        return f"{self.worker_id}-projects" if self.worker_tier == "projects" else self.worker_id

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


def settings_table(settings: Settings) -> list[tuple[str, str, str, str]]:
    """(variable, current value, default, description) for every setting; secrets redacted."""
    rows = []
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        default = field.default
        if isinstance(value, SecretStr):
            shown = "<set>"
        else:
            shown = "" if value is None else str(value)
        if isinstance(default, SecretStr):
            default = "<built-in>"
        rows.append((ENV_PREFIX + name.upper(), shown, "" if default is None else str(default), field.description or ""))
    return rows


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, resolved once."""
    return Settings.from_env()
