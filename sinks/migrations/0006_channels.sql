-- 0006: alert deliveries (issue 4). One row per delivery attempt of an alert (or a digest) to a
-- channel: outcome delivered | retry | failed | rate_limited. `error` is redacted of secrets.
CREATE TABLE IF NOT EXISTS {db}.alert_deliveries
(
    alert_id String,
    version UInt32,
    kind LowCardinality(String) DEFAULT '',
    severity LowCardinality(String) DEFAULT '',
    route LowCardinality(String),
    channel LowCardinality(String),
    channel_type LowCardinality(String),
    event LowCardinality(String),
    attempt UInt16,
    outcome LowCardinality(String),
    status_code UInt16 DEFAULT 0,
    error String DEFAULT '',
    duration_ms Float64 DEFAULT 0,
    ts DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (alert_id, ts)
TTL toDateTime(ts) + INTERVAL {alerts_ttl_days} DAY;
