-- 0010: an append-only revocation audit trail. `revocations` is a ReplacingMergeTree (current
-- state per decision), and a background merge may collapse a decision's `started` row into its
-- `executed` row at any time — so the history cannot live there. Every row inserted into
-- `revocations` is copied, at insert time, into `revocation_audit` (plain MergeTree: never
-- collapsed). A future migration that adds a column to `revocations` must add it here too.
CREATE TABLE IF NOT EXISTS {db}.revocation_audit AS {db}.revocations
ENGINE = MergeTree
ORDER BY (decision_id, version)
TTL toDateTime(requested_at) + INTERVAL {alerts_ttl_days} DAY;
-- Rows written before this migration: whatever merges have left of them (once, while empty).
INSERT INTO {db}.revocation_audit SELECT * FROM {db}.revocations
WHERE (SELECT count() FROM {db}.revocation_audit) = 0;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.revocation_audit_mv TO {db}.revocation_audit
AS SELECT * FROM {db}.revocations
