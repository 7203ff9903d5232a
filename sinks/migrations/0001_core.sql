-- 0001: core tables. Idempotent (IF NOT EXISTS); {db} and {*_ttl_days} are filled in by the runner.
-- usage_events: one row per distinct event_id. ReplacingMergeTree is the last line of defence;
-- the worker also skips ids already stored when it re-reads after a restart.
CREATE TABLE IF NOT EXISTS {db}.usage_events
(
    event_id String,
    ts DateTime64(3, 'UTC'),
    provider LowCardinality(String),
    key_id String,
    principal String DEFAULT '',
    project String DEFAULT '',
    model LowCardinality(String),
    operation LowCardinality(String) DEFAULT '',
    requests UInt32,
    input_tokens UInt64,
    output_tokens UInt64,
    cached_input_tokens UInt64,
    cost_usd Float64,
    price_source LowCardinality(String) DEFAULT '',
    source_ip String DEFAULT '',
    user_agent String DEFAULT '',
    region LowCardinality(String) DEFAULT '',
    country LowCardinality(String) DEFAULT '',
    status UInt16 DEFAULT 0,
    error_code LowCardinality(String) DEFAULT '',
    latency_ms Float32 DEFAULT 0,
    source LowCardinality(String) DEFAULT '',
    request_id String DEFAULT '',
    kafka_partition Int32 DEFAULT -1,
    kafka_offset Int64 DEFAULT -1,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (provider, key_id, ts, event_id)
TTL toDateTime(ts) + INTERVAL {usage_ttl_days} DAY;

CREATE TABLE IF NOT EXISTS {db}.audit_events
(
    event_id String,
    ts DateTime64(3, 'UTC'),
    provider LowCardinality(String),
    key_id String DEFAULT '',
    principal String DEFAULT '',
    project String DEFAULT '',
    action LowCardinality(String),
    source_ip String DEFAULT '',
    user_agent String DEFAULT '',
    region LowCardinality(String) DEFAULT '',
    country LowCardinality(String) DEFAULT '',
    error_code LowCardinality(String) DEFAULT '',
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (provider, ts, event_id)
TTL toDateTime(ts) + INTERVAL {usage_ttl_days} DAY;

CREATE TABLE IF NOT EXISTS {db}.billing_events
(
    event_id String,
    ts DateTime64(3, 'UTC'),
    period_end DateTime64(3, 'UTC'),
    provider LowCardinality(String),
    project String DEFAULT '',
    scope String DEFAULT '',
    line_item String DEFAULT '',
    amount_usd Float64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (provider, project, ts, event_id);

-- alerts: every version of an alert is inserted; `FINAL` (or argMax by version) gives the latest.
CREATE TABLE IF NOT EXISTS {db}.alerts
(
    alert_id String,
    kind LowCardinality(String),
    provider LowCardinality(String),
    key_id Nullable(String),
    project Nullable(String),
    started_at DateTime64(3, 'UTC'),
    detected_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC'),
    severity LowCardinality(String),
    score Float64,
    reasons Array(String),
    cost_impact_usd Float64,
    status LowCardinality(String),
    version UInt32,
    details String DEFAULT '{}',
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY alert_id
TTL toDateTime(detected_at) + INTERVAL {alerts_ttl_days} DAY;

CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    received_at DateTime64(3, 'UTC'),
    reason LowCardinality(String),
    error String,
    topic String,
    partition Int32,
    offset Int64,
    idx Int32,
    payload String,
    payload_size UInt32
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(received_at)
ORDER BY (received_at, topic, partition, offset)
TTL toDateTime(received_at) + INTERVAL {dead_letters_ttl_days} DAY;

CREATE TABLE IF NOT EXISTS {db}.scores
(
    ts DateTime64(3, 'UTC'),
    provider LowCardinality(String),
    key_id String,
    project String DEFAULT '',
    detector LowCardinality(String),
    score Float32,
    details String DEFAULT '{}'
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (provider, key_id, ts)
TTL toDateTime(ts) + INTERVAL {scores_ttl_days} DAY;

-- Per-minute rollup by provider, project, key and model; dashboards and detectors sum() over it.
CREATE TABLE IF NOT EXISTS {db}.usage_minute
(
    minute DateTime('UTC'),
    provider LowCardinality(String),
    project String,
    key_id String,
    model LowCardinality(String),
    events UInt64,
    requests UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cached_input_tokens UInt64,
    cost_usd Float64,
    errors UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (provider, project, key_id, model, minute)
TTL minute + INTERVAL {usage_ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_minute_mv TO {db}.usage_minute AS
SELECT
    toStartOfMinute(ts) AS minute, provider, project, key_id, model,
    count() AS events, sum(requests) AS requests, sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens, sum(cached_input_tokens) AS cached_input_tokens,
    sum(cost_usd) AS cost_usd, countIf(status >= 400 OR error_code != '') AS errors
FROM {db}.usage_events
GROUP BY minute, provider, project, key_id, model;

-- Per-minute spend by provider and project: the finance views' cheapest source.
CREATE TABLE IF NOT EXISTS {db}.spend_minute_by_project
(
    minute DateTime('UTC'),
    provider LowCardinality(String),
    project String,
    requests UInt64,
    cost_usd Float64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (provider, project, minute)
TTL minute + INTERVAL {usage_ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.spend_minute_by_project_mv TO {db}.spend_minute_by_project AS
SELECT toStartOfMinute(ts) AS minute, provider, project, sum(requests) AS requests, sum(cost_usd) AS cost_usd
FROM {db}.usage_events
GROUP BY minute, provider, project;
