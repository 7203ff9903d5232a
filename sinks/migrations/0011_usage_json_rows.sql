-- 0011: usage rows are written as JSON (sinks/clickhouse.py `usage_json`), which leaves out the
-- fields equal to the event's default and gives the time as `ts_ms`, epoch milliseconds (a JSON
-- number for a DateTime64 column is read as seconds). `ts_ms` is EPHEMERAL: never stored, only
-- the source of `ts`; a left-out `requests` is 1, the contract's default, not 0.
ALTER TABLE {db}.usage_events ADD COLUMN IF NOT EXISTS ts_ms Int64 EPHEMERAL;
ALTER TABLE {db}.usage_events MODIFY COLUMN ts DateTime64(3, 'UTC') DEFAULT fromUnixTimestamp64Milli(ts_ms, 'UTC');
ALTER TABLE {db}.usage_events MODIFY COLUMN requests UInt32 DEFAULT 1
