-- 0002: stream worker state. Idempotent (IF NOT EXISTS).
-- detector_snapshots: the pickled detection core of one worker (scope 'core'), with the input
-- offsets it includes; the latest row per (worker_id, scope) is restored at start.
CREATE TABLE IF NOT EXISTS {db}.detector_snapshots
(
    worker_id String,
    scope String,
    taken_at DateTime64(3, 'UTC'),
    offsets String,
    watermark_ms Int64,
    size_bytes UInt64,
    digest String,
    state String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree(taken_at)
ORDER BY (worker_id, scope);

-- stream_offsets: per input partition, the highest offset whose output may already be stored.
-- Written BEFORE a batch's rows, so after a crash every re-read message at or below it is
-- checked against usage_events/dead_letters instead of being inserted twice.
CREATE TABLE IF NOT EXISTS {db}.stream_offsets
(
    topic String,
    partition Int32,
    offset Int64,
    worker_id String,
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(offset)
ORDER BY (topic, partition);
