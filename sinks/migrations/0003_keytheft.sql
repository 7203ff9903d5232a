-- 0003: key theft. Idempotent (IF NOT EXISTS).
-- key_baselines: a key's learned baseline, written when the key goes idle (key_idle_expire_s)
-- and dropped from memory; the latest row per key is restored when the key is seen again.
-- `state` is the detector's own serialisation (zlib + pickle, base64), trusted like
-- detector_snapshots: only keywatch writes this table.
CREATE TABLE IF NOT EXISTS {db}.key_baselines
(
    provider LowCardinality(String),
    key_id String,
    project String DEFAULT '',
    last_ts DateTime64(3, 'UTC'),
    saved_at DateTime64(3, 'UTC'),
    settled Float32,
    state String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree(saved_at)
ORDER BY (provider, key_id);
