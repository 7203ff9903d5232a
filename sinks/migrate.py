"""Numbered, idempotent schema migrations (`sinks/migrations/NNNN_name.sql`).

Each file is a list of `;`-separated statements written to be safe to re-run (IF NOT EXISTS).
Applied versions are recorded in `{db}.schema_migrations`; a file whose checksum changed after
it was applied is an error (write a new migration instead of editing an old one).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self, params: dict[str, Any]) -> list[str]:
        text = "\n".join(line for line in self.sql.splitlines() if not line.strip().startswith("--"))
        # Only `{name}` for known parameters is replaced, so JSON defaults like '{}' survive.
        filled = re.sub(r"\{([a-z_]+)\}", lambda m: str(params[m.group(1)]) if m.group(1) in params else m.group(0), text)
        return [s.strip() for s in filled.split(";") if s.strip()]


def load_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("keywatch.sinks.migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration numbers: {versions}")
    return found


def migration_params(settings) -> dict[str, Any]:
    return {
        "db": settings.clickhouse_database,
        "usage_ttl_days": settings.usage_ttl_days,
        "alerts_ttl_days": settings.alerts_ttl_days,
        "dead_letters_ttl_days": settings.dead_letters_ttl_days,
        "scores_ttl_days": settings.scores_ttl_days,
    }


def migrate(client, params: dict[str, Any]) -> list[str]:
    """Apply pending migrations; return the names applied. Safe to call at every start."""
    db = params["db"]
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, "
        "checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version"
    )
    done = {int(r[0]): r[1] for r in client.query(f"SELECT version, checksum FROM {db}.schema_migrations").result_rows}
    applied = []
    for m in load_migrations():
        if m.version in done:
            if done[m.version] != m.checksum:
                raise MigrationError(f"migration {m.version:04d}_{m.name} changed after it was applied; add a new one instead")
            continue
        for stmt in m.statements(params):
            client.command(stmt)
        client.insert(f"{db}.schema_migrations", [[m.version, m.name, m.checksum]], column_names=["version", "name", "checksum"])
        applied.append(f"{m.version:04d}_{m.name}")
    return applied
