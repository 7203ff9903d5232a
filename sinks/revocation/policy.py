"""Revocation policy: which alerts may revoke which keys, and the limits on automation.

Loaded from the YAML file named by `KEYWATCH_REVOCATION_POLICY_FILE` (example:
`infra/revocation.example.yaml`). Rules are tried in order; the first that matches an alert
decides. Anything not matched is `skipped_by_policy`. A policy is validated completely at load,
so a typo fails at start rather than at 3 a.m. during an incident.

>>> p = Policy.from_dict({"rules": [{"name": "theft", "kinds": ["key_theft"], "min_severity": "high",
...                                  "action": "disable"}],
...                       "protected": [{"provider": "openai", "key_id": "key_prod_*"}]})
>>> p.match("key_theft", "anthropic", "p1", "critical", 0.95).name
'theft'
>>> p.match("cost_spike", "anthropic", "p1", "critical", 0.95) is None
True
>>> p.is_protected("openai", "key_prod_42", None), p.is_protected("openai", "key_dev_1", None)
(True, False)
>>> parse_duration("10m"), parse_duration(90)
(600.0, 90.0)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from keywatch.models.alerts import SEVERITIES

ACTIONS = ("disable", "delete", "none")
_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class PolicyError(ValueError):
    """The policy file is invalid; the message names the offending entry."""


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``90s``, ``10m``, ``1h``, ``7d``."""
    if isinstance(value, bool):
        raise PolicyError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    m = _DUR.match(str(value))
    if not m:
        raise PolicyError(f"not a duration: {value!r} (use e.g. 90s, 10m, 1h)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _globs(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ("*",)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PolicyError(f"{where}: expected a list of names (globs allowed)")
    return tuple(value)


def _any(patterns: tuple[str, ...], value: str | None) -> bool:
    return any(fnmatchcase(value or "", p) for p in patterns)


@dataclass(frozen=True)
class Rule:
    """One policy rule. `action: disable` is reversible; `delete` is not and needs approval
    unless `allow_irreversible: true` (and is replaced by disable wherever the provider has it)."""

    name: str
    action: str
    kinds: tuple[str, ...] = ("*",)
    providers: tuple[str, ...] = ("*",)
    projects: tuple[str, ...] = ("*",)
    min_severity: str = "high"
    min_score: float = 0.0
    require_approval: bool = False
    allow_irreversible: bool = False

    def matches(self, kind: str, provider: str, project: str | None, severity: str, score: float) -> bool:
        return (
            _any(self.kinds, kind) and _any(self.providers, provider) and _any(self.projects, project)
            and SEVERITIES.index(severity) >= SEVERITIES.index(self.min_severity) and score >= self.min_score
        )


@dataclass(frozen=True)
class Protected:
    """A key (or every key of a project) that automation never touches: approval instead."""

    provider: str = "*"
    key_id: str = "*"
    project: str = "*"
    note: str = ""

    def covers(self, provider: str, key_id: str | None, project: str | None) -> bool:
        return fnmatchcase(provider, self.provider) and fnmatchcase(key_id or "", self.key_id) and fnmatchcase(project or "", self.project)


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()
    protected: tuple[Protected, ...] = ()
    dry_run: bool = False  # forces dry run even when KEYWATCH_REVOCATION_ENABLED=true
    cooldown_s: float = 3600.0  # after an action on a key, no other action on it for this long
    max_actions_per_hour: int = 10
    max_actions_per_project_per_hour: int = 3
    breaker_window_s: float = 600.0
    breaker_max_actions: int = 5
    breaker_max_keys: int = 8  # distinct keys with actionable alerts in the window
    breaker_open_s: float = 3600.0
    approval_ttl_s: float | None = None  # None: the KEYWATCH_REVOCATION_APPROVAL_TTL_S setting
    adapters: dict[str, str] = field(default_factory=dict)  # provider → adapter name overrides

    def match(self, kind: str, provider: str, project: str | None, severity: str, score: float) -> Rule | None:
        return next((r for r in self.rules if r.matches(kind, provider, project, severity, score)), None)

    def is_protected(self, provider: str, key_id: str | None, project: str | None) -> bool:
        return any(p.covers(provider, key_id, project) for p in self.protected)

    @classmethod
    def load(cls, path: Path) -> "Policy":
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise PolicyError(f"{path}: not valid YAML: {exc}") from None
        try:
            return cls.from_dict(data)
        except PolicyError as exc:
            raise PolicyError(f"{path}: {exc}") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Policy":
        if not isinstance(data, dict):
            raise PolicyError("the policy must be a mapping")
        _only(data, {"rules", "protected", "dry_run", "cooldown", "limits", "circuit_breaker", "approval_ttl", "adapters"}, "policy")
        rules = tuple(_rule(r, i) for i, r in enumerate(data.get("rules") or []))
        if len({r.name for r in rules}) != len(rules):
            raise PolicyError("rules: names must be unique")
        protected = tuple(_protected(p, i) for i, p in enumerate(data.get("protected") or []))
        limits = data.get("limits") or {}
        _only(limits, {"per_hour", "per_project_per_hour"}, "limits")
        cb = data.get("circuit_breaker") or {}
        _only(cb, {"window", "max_actions", "max_keys", "open_for"}, "circuit_breaker")
        adapters = data.get("adapters") or {}
        if not isinstance(adapters, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in adapters.items()):
            raise PolicyError("adapters: expected a mapping provider → adapter name")
        return cls(
            rules=rules, protected=protected, dry_run=_bool(data.get("dry_run", False), "dry_run"),
            cooldown_s=parse_duration(data.get("cooldown", "1h")),
            max_actions_per_hour=_count(limits.get("per_hour", 10), "limits.per_hour"),
            max_actions_per_project_per_hour=_count(limits.get("per_project_per_hour", 3), "limits.per_project_per_hour"),
            breaker_window_s=parse_duration(cb.get("window", "10m")),
            breaker_max_actions=_count(cb.get("max_actions", 5), "circuit_breaker.max_actions"),
            breaker_max_keys=_count(cb.get("max_keys", 8), "circuit_breaker.max_keys"),
            breaker_open_s=parse_duration(cb.get("open_for", "1h")),
            approval_ttl_s=parse_duration(data["approval_ttl"]) if "approval_ttl" in data else None,
            adapters=dict(adapters),
        )


def _only(d: Any, allowed: set[str], where: str) -> None:
    if not isinstance(d, dict):
        raise PolicyError(f"{where}: expected a mapping")
    extra = set(d) - allowed
    if extra:  # a misspelt safety setting silently ignored would be worse than a failed start
        raise PolicyError(f"{where}: unknown field(s) {sorted(extra)}; allowed: {sorted(allowed)}")


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise PolicyError(f"{where}: expected true or false")
    return v


def _count(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise PolicyError(f"{where}: expected an integer ≥ 0")
    return v


def _rule(r: Any, i: int) -> Rule:
    where = f"rules[{i}]"
    _only(r, {"name", "action", "kinds", "providers", "projects", "min_severity", "min_score", "require_approval", "allow_irreversible"}, where)
    name = r.get("name") or f"rule{i}"
    action = r.get("action")
    if action not in ACTIONS:
        raise PolicyError(f"{where} ({name}): action must be one of {ACTIONS}")
    sev = r.get("min_severity", "high")
    if sev not in SEVERITIES:
        raise PolicyError(f"{where} ({name}): min_severity must be one of {SEVERITIES}")
    score = r.get("min_score", 0.0)
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1:
        raise PolicyError(f"{where} ({name}): min_score must be a number in [0, 1]")
    return Rule(
        name=str(name), action=action, kinds=_globs(r.get("kinds"), f"{where}.kinds"),
        providers=_globs(r.get("providers"), f"{where}.providers"), projects=_globs(r.get("projects"), f"{where}.projects"),
        min_severity=sev, min_score=float(score),
        require_approval=_bool(r.get("require_approval", False), f"{where}.require_approval"),
        allow_irreversible=_bool(r.get("allow_irreversible", False), f"{where}.allow_irreversible"),
    )


def _protected(p: Any, i: int) -> Protected:
    where = f"protected[{i}]"
    _only(p, {"provider", "key_id", "project", "note"}, where)
    if "key_id" not in p and "project" not in p:
        raise PolicyError(f"{where}: give a key_id or a project (a bare provider would protect every key)")
    vals = {k: p[k] for k in ("provider", "key_id", "project", "note") if k in p}
    if not all(isinstance(v, str) and v for v in vals.values()):
        raise PolicyError(f"{where}: values must be non-empty strings")
    return Protected(**vals)
