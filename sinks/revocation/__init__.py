"""Automatic key revocation (issue 5): policy → decision → provider call, every step audited.

`policy` (YAML rules, protected keys, limits) · `guard` (idempotency, cool-down, rate limits,
circuit breaker) · `engine` (the alert hook) · `adapters`, `adapter_http`, `adapter_aws`
(OpenAI, Anthropic, LiteLLM, webhook, AWS IAM) · `store` (ClickHouse `revocations`) ·
`service` (`RevocationService`: list/approve/reject/undo, for the CLI and the HTTP API) · `cli`.
"""
