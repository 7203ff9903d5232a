"""Grafana dashboards as code (issue 6): `soc`, `finance`, `ops` define them, `build` writes
`json/`, `push` uploads them, `macros` expands the ClickHouse plugin's macros for tests, and
`sample` fills a database with a deterministic story for tests and demos."""
