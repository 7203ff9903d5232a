"""Price table and the price enricher: fills `cost_usd` and sets `price_source` on usage events.

The bundled table (`models/data/prices.yaml`, with a `version` and `as_of` date) is merged with
an optional user override file (`KEYWATCH_PRICES_FILE`, same format). Raw model ids are matched
through aliases: dates (`gpt-4o-2024-08-06`, `claude-3-5-sonnet-20241022`, `@20241022`),
inference-profile prefixes (`us.`/`eu.`/`apac.`), Bedrock ARNs and `-v2:0` suffixes.

>>> table = PriceTable.load()
>>> table.lookup("bedrock", "arn:aws:bedrock:us-east-1:123:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0")[0]
(3.0, 15.0, 0.3)
>>> table.lookup("openai", "gpt-4o-2024-08-06")[1].startswith("table:")
True
>>> from keywatch.models.events import UsageEvent
>>> ev = UsageEvent(event_id="e", ts=1795622400000, provider="openai", key_id="k", model="gpt-4o-mini",
...                 input_tokens=1_000_000, output_tokens=1_000_000)
>>> enr = PriceEnricher(table); enr.enrich([ev]); round(ev.cost_usd, 3), ev.price_source[:6]
(0.75, 'table:')
>>> ev2 = UsageEvent(event_id="f", ts=1795622400000, provider="openai", key_id="k", model="my-finetune")
>>> enr.enrich([ev2]); ev2.price_source, ev2.cost_usd, enr.unknown
('unknown', 0.0, {('openai', 'my-finetune'): 1})
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Iterator

import yaml

from keywatch.models.events import UsageEvent

Price = tuple[float, float, float]  # input, output, cached input: USD per 1M tokens
_REGION = re.compile(r"^(us|eu|apac|us-gov|global|jp|au|ca|eu-central)\.")
_VENDOR = re.compile(r"^(anthropic|openai|google|azure)[./]")
_SUFFIXES = [
    re.compile(r"@[^@]*$"),  # Vertex: claude-3-5-sonnet-v2@20241022, gemini-1.5-pro@002
    re.compile(r":\d+$"),  # Bedrock: …-v2:0
    re.compile(r"-v\d+$"),  # Bedrock: …-v2
    re.compile(r"-(latest|preview(-[\d-]+)?|exp(-[\d-]+)?)$"),
    re.compile(r"-\d{4}-\d{2}-\d{2}$"),  # OpenAI: gpt-4o-2024-08-06
    re.compile(r"-\d{8}$"),  # Anthropic: claude-3-5-sonnet-20241022
    re.compile(r"-\d{3,4}$"),  # gpt-4-0613, mistral-large-2407, gemini-1.5-pro-002
]
# OpenAI-style usage reports count cache reads inside input_tokens; others report them apart.
CACHED_IS_SUBSET = frozenset({"openai", "azure_openai"})


def candidates(model: str) -> Iterator[str]:
    """Names to try, most specific first.

    >>> list(candidates("us.anthropic.claude-3-haiku-20240307-v1:0"))[-2:]
    ['anthropic.claude-3-haiku', 'claude-3-haiku']
    """
    s = model.strip().lower()
    if s.startswith("arn:") or "/" in s:
        s = s.rsplit("/", 1)[-1]
    s = _REGION.sub("", s)
    seen = set()
    while True:
        for name in (s, _VENDOR.sub("", s)):
            if name not in seen:
                seen.add(name)
                yield name
        for rx in _SUFFIXES:
            new = rx.sub("", s)
            if new != s and new:
                s = new
                break
        else:
            return


def _parse(doc: dict | None, where: str) -> tuple[dict[str, Price], dict[str, dict[str, Price]]]:
    doc = doc or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: expected a mapping")

    def prices(section) -> dict[str, Price]:
        out = {}
        for name, p in (section or {}).items():
            try:
                i, o = float(p["input"]), float(p.get("output", 0.0))
                c = float(p.get("cached_input", i))
            except (TypeError, KeyError, ValueError):
                raise ValueError(f"{where}: model {name!r} needs numeric input/output prices") from None
            if min(i, o, c) < 0:
                raise ValueError(f"{where}: model {name!r} has a negative price")
            out[str(name).lower()] = (i, o, c)
        return out

    return prices(doc.get("models")), {str(k): prices(v) for k, v in (doc.get("providers") or {}).items()}


class PriceTable:
    """Bundled table plus overrides; `lookup(provider, model)` → (price, source) or (None, "unknown")."""

    def __init__(self, doc: dict, override: dict | None = None) -> None:
        self.version = str(doc.get("version", "?"))
        self.as_of = str(doc.get("as_of", "?"))
        self.models, self.providers = _parse(doc, "prices.yaml")
        self.o_models, self.o_providers = _parse(override, "prices override") if override else ({}, {})
        self._cache: dict[tuple[str, str], tuple[Price | None, str]] = {}

    @classmethod
    def load(cls, override_file: Path | None = None) -> "PriceTable":
        doc = yaml.safe_load(resources.files("keywatch.models.data").joinpath("prices.yaml").read_text())
        override = yaml.safe_load(Path(override_file).read_text()) if override_file else None
        return cls(doc, override)

    def lookup(self, provider: str, model: str) -> tuple[Price | None, str]:
        key = (provider, model)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._find(provider, model)
            if len(self._cache) > 50_000:  # bounded: drop the oldest half (ids are few in practice)
                for k in list(self._cache)[:25_000]:
                    del self._cache[k]
        return hit

    def _find(self, provider: str, model: str) -> tuple[Price | None, str]:
        tables = [(self.o_providers.get(provider, {}), "override"), (self.o_models, "override"),
                  (self.providers.get(provider, {}), f"table:{self.version}"), (self.models, f"table:{self.version}")]
        for name in candidates(model):
            for table, source in tables:
                if name in table:
                    return table[name], source
        return None, "unknown"

    def cost(self, provider: str, price: Price, inp: int, out: int, cached: int) -> float:
        uncached = max(0, inp - cached) if provider in CACHED_IS_SUBSET else inp
        return (uncached * price[0] + out * price[1] + cached * price[2]) / 1e6

    def describe(self) -> dict:
        return {"version": self.version, "as_of": self.as_of, "models": len(self.models),
                "override_models": len(self.o_models) + sum(map(len, self.o_providers.values()))}


class PriceEnricher:
    """`Enricher`: `cost_usd` when absent, `price_source` always; counts unknown models."""

    name = "prices"

    def __init__(self, table: PriceTable | None = None) -> None:
        self.table = table or PriceTable.load()
        self.unknown: dict[tuple[str, str], int] = {}
        self.by_source: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings) -> "PriceEnricher":
        return cls(PriceTable.load(settings.prices_file))

    def enrich(self, usage: list[UsageEvent]) -> None:
        lookup, cost, by_source = self.table.lookup, self.table.cost, self.by_source
        for e in usage:
            if e.cost_usd is not None:
                src = "event"
            else:
                price, src = lookup(e.provider, e.model)
                if price is None:
                    e.cost_usd = 0.0  # flagged, never silent: price_source=unknown + counter
                    k = (e.provider, e.model)
                    self.unknown[k] = self.unknown.get(k, 0) + 1
                else:
                    e.cost_usd = cost(e.provider, price, e.input_tokens, e.output_tokens, e.cached_input_tokens)
            e.price_source = src
            by_source[src] = by_source.get(src, 0) + 1

    def describe(self) -> dict:
        top = sorted(self.unknown.items(), key=lambda kv: -kv[1])[:20]
        return {**self.table.describe(), "events_by_price_source": dict(self.by_source),
                "unknown_models": [{"provider": p, "model": m, "events": n} for (p, m), n in top]}
