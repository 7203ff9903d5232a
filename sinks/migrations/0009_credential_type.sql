-- 0009: how the caller authenticated (e.g. `bedrock_api_key` for a Bedrock bearer-token call).
ALTER TABLE {db}.usage_events ADD COLUMN IF NOT EXISTS credential_type LowCardinality(String) DEFAULT '';
ALTER TABLE {db}.audit_events ADD COLUMN IF NOT EXISTS credential_type LowCardinality(String) DEFAULT ''
