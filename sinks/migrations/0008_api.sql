-- 0008: actions taken on alerts through the HTTP API / CLI (issue 6): acknowledgements and analyst
-- feedback. The alert itself gets a new version in `alerts`; this table keeps who did what, when,
-- with which label and suppression window, for the incident report and for tuning.
CREATE TABLE IF NOT EXISTS {db}.alert_actions
(
    at DateTime64(3, 'UTC'),
    alert_id String,
    action LowCardinality(String),
    label LowCardinality(String) DEFAULT '',
    until Nullable(DateTime64(3, 'UTC')),
    actor String DEFAULT '',
    note String DEFAULT '',
    alert_version UInt32 DEFAULT 0,
    in_core UInt8 DEFAULT 0
)
ENGINE = MergeTree
ORDER BY (alert_id, at)
TTL toDateTime(at) + INTERVAL {alerts_ttl_days} DAY;
