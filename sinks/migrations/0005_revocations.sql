-- 0005: revocation audit trail (issue 5). One decision = one decision_id; every state it goes
-- through (started → executed/failed, pending_approval → approved/rejected/expired, executed →
-- undone) is a new row with a higher `version`, so `FINAL` (or argMax by version) gives the
-- current state while the unmerged rows keep the history. Never a secret in any column.
CREATE TABLE IF NOT EXISTS {db}.revocations
(
    decision_id String,
    version UInt64,
    alert_id String,
    alert_kind LowCardinality(String),
    severity LowCardinality(String),
    score Float64,
    provider LowCardinality(String),
    adapter LowCardinality(String),
    key_id String,
    project String DEFAULT '',
    action LowCardinality(String),
    reversible UInt8,
    rule String DEFAULT '',
    actor String,
    dry_run UInt8,
    protected UInt8 DEFAULT 0,
    outcome LowCardinality(String),
    reason String DEFAULT '',
    request_id String DEFAULT '',
    status_code Int32 DEFAULT 0,
    error String DEFAULT '',
    attempts UInt8 DEFAULT 0,
    undo_of String DEFAULT '',
    requested_at DateTime64(3, 'UTC'),
    completed_at Nullable(DateTime64(3, 'UTC')),
    expires_at Nullable(DateTime64(3, 'UTC')),
    duration_ms Float64 DEFAULT 0,
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY decision_id
TTL toDateTime(requested_at) + INTERVAL {alerts_ttl_days} DAY;
