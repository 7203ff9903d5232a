-- 0004: cost (issue 4): spend forecasts, projections, budgets, billing reconciliation.
-- spend_forecast: actual vs expected and upper band per series and minute (finance dashboard).
-- level: project | provider every minute; key | model when KEYWATCH_COST_FORECAST_KEY_ROWS.
CREATE TABLE IF NOT EXISTS {db}.spend_forecast
(
    minute DateTime('UTC'),
    level LowCardinality(String),
    provider LowCardinality(String),
    project String DEFAULT '',
    key_id String DEFAULT '',
    model LowCardinality(String) DEFAULT '',
    actual_usd Float64,
    expected_usd Float64,
    upper_usd Float64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (level, provider, project, key_id, model, minute)
TTL minute + INTERVAL {usage_ttl_days} DAY;

-- spend_projection: end-of-day / end-of-month projections, every 15 minutes of event time.
CREATE TABLE IF NOT EXISTS {db}.spend_projection
(
    ts DateTime('UTC'),
    level LowCardinality(String),
    provider LowCardinality(String),
    project String DEFAULT '',
    day_spent_usd Float64,
    eod_projected_usd Float64,
    month_spent_usd Float64,
    eom_projected_usd Float64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (level, provider, project, ts)
TTL ts + INTERVAL {usage_ttl_days} DAY;

-- budget_status: one row each time a budget step is crossed.
CREATE TABLE IF NOT EXISTS {db}.budget_status
(
    ts DateTime('UTC'),
    budget_id String,
    period_start DateTime('UTC'),
    spent_usd Float64,
    amount_usd Float64,
    step_pct Float64
)
ENGINE = ReplacingMergeTree
ORDER BY (budget_id, period_start, step_pct);

-- billing_reconciliation: every billing event compared with computed spend.
CREATE TABLE IF NOT EXISTS {db}.billing_reconciliation
(
    day DateTime('UTC'),
    period_end DateTime('UTC'),
    provider LowCardinality(String),
    project String DEFAULT '',
    billed_usd Float64,
    computed_usd Float64,
    diff_usd Float64,
    diff_pct Float64,
    event_id String
)
ENGINE = ReplacingMergeTree
ORDER BY (provider, project, day, event_id);
