"""Incremental pollers of the OpenAI and Anthropic admin usage/cost APIs (`keywatch poll`).

Each endpoint keeps a cursor (the end of the last fully read window, epoch seconds) in
`<data_dir>/connectors/<provider>.cursor.json`. A poll reads `[cursor, settled_end)` where
`settled_end` is the last bucket boundary at least `poll_settle_s` in the past: buckets still
filling would be read again later with bigger numbers, and deterministic event ids would then
drop the complete version as a duplicate. Pages are followed via `has_more`/`next_page`; 429
honours `Retry-After`, 5xx and network errors back off exponentially. The cursor moves only
after every page of a window was read and handed to the sink, so a crash re-reads the window
(and the event ids deduplicate it).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

from keywatch.models.events import format_ts
from keywatch.stream.connectors.ingest import Ingester
from keywatch.models.events import Event
from keywatch.stream.decode import DeadLetter, EventDecoder

log = logging.getLogger(__name__)
_WIDTH_S = {"1m": 60, "1h": 3600, "1d": 86400}


class PollError(RuntimeError):
    """The API could not be read (bad key, retries exhausted). The cursor is not moved."""


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    fmt: str
    params: tuple[tuple[str, str], ...] = ()
    width: str | None = None  # None: the poll's bucket width


def endpoints(provider: str) -> list[Endpoint]:
    if provider == "openai":
        group = (("group_by", "api_key_id"), ("group_by", "project_id"), ("group_by", "model"))
        usage = [Endpoint(n, f"/v1/organization/usage/{n}", "openai-usage", group)
                 for n in ("completions", "embeddings", "moderations", "images", "audio_speeches", "audio_transcriptions")]
        costs = Endpoint("costs", "/v1/organization/costs", "openai-costs",
                         (("group_by", "project_id"), ("group_by", "line_item")), width="1d")
        return usage + [costs]
    if provider == "anthropic":
        return [
            Endpoint("messages", "/v1/organizations/usage_report/messages", "anthropic-usage",
                     (("group_by[]", "api_key_id"), ("group_by[]", "model"), ("group_by[]", "workspace_id"))),
            Endpoint("cost_report", "/v1/organizations/cost_report", "anthropic-cost",
                     (("group_by[]", "workspace_id"), ("group_by[]", "description")), width="1d"),
        ]
    raise ValueError(f"unknown provider {provider!r} (openai, anthropic)")


@dataclass
class PollResult:
    pages: int = 0
    events: int = 0
    dead: int = 0
    retries: int = 0
    windows: dict[str, tuple[int, int]] = field(default_factory=dict)


Sink = Callable[[list[Event], list[DeadLetter]], None]


class Poller:
    """Polls one provider. `client`, `sleep` and `now` are injectable for tests (real HTTP)."""

    def __init__(self, provider: str, settings, *, client: httpx.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep, now: Callable[[], float] = time.time) -> None:
        self.provider = provider
        self.settings = settings
        self.endpoints = endpoints(provider)
        key = settings.secret(f"{provider}_admin_key")
        if not key:
            raise PollError(f"KEYWATCH_{provider.upper()}_ADMIN_KEY is not set")
        headers = ({"Authorization": f"Bearer {key}"} if provider == "openai"
                   else {"x-api-key": key, "anthropic-version": "2023-06-01"})
        self.base_url = getattr(settings, f"{provider}_base_url").rstrip("/")
        self.client = client or httpx.Client(timeout=settings.poll_timeout_s)
        self.client.headers.update(headers)
        self.sleep = sleep
        self.now = now
        self.decoder = EventDecoder.from_settings(settings, streaming=False)
        self.cursor_path = Path(settings.data_dir) / "connectors" / f"{provider}.cursor.json"

    # --- cursor ---------------------------------------------------------------------------
    def load_cursor(self) -> dict[str, int]:
        try:
            data = json.loads(self.cursor_path.read_text())
            return {k: int(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def save_cursor(self, cursor: dict[str, int]) -> None:
        # Write-then-rename: a crash mid-write never leaves a truncated cursor behind.
        self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cursor_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cursor, sort_keys=True))
        os.replace(tmp, self.cursor_path)

    # --- polling --------------------------------------------------------------------------
    def poll_once(self, sink: Sink) -> PollResult:
        """Read every endpoint from its cursor to the settled end; hand events to `sink`."""
        result = PollResult()
        cursor = self.load_cursor()
        now = self.now()
        for ep in self.endpoints:
            width_name = ep.width or self.settings.poll_bucket_width
            width = _WIDTH_S[width_name]
            end = int((now - self.settings.poll_settle_s) // width * width)
            start = cursor.get(ep.name, int((now - self.settings.poll_lookback_s) // width * width))
            if end <= start:
                continue
            ing = Ingester(ep.fmt, self.decoder)
            events: list[Event] = []
            dead: list[DeadLetter] = []
            page: str | None = None
            while True:
                body = self._get(ep, self._params(ep, width_name, start, end, page), result)
                result.pages += 1
                ok, bad = ing.feed_document(body, f"{self.provider}:{ep.name}", result.pages)
                events.extend(ok)
                dead.extend(bad)
                page = body.get("next_page") if isinstance(body, dict) else None
                if not (isinstance(body, dict) and body.get("has_more") and page):
                    break
            sink(events, dead)
            result.events += len(events)
            result.dead += len(dead)
            result.windows[ep.name] = (start, end)
            cursor[ep.name] = end
            self.save_cursor(cursor)
        return result

    def _params(self, ep: Endpoint, width: str, start: int, end: int, page: str | None) -> list[tuple[str, Any]]:
        if self.provider == "openai":
            params: list[tuple[str, Any]] = [("start_time", start), ("end_time", end), ("bucket_width", width)]
        else:
            params = [("starting_at", format_ts(start * 1000)), ("ending_at", format_ts(end * 1000)), ("bucket_width", width)]
        params += list(ep.params)
        if page:
            params.append(("page", page))
        return params

    def _get(self, ep: Endpoint, params: list, result: PollResult) -> Any:
        url = self.base_url + ep.path
        retries = self.settings.poll_max_retries
        for attempt in range(retries + 1):
            try:
                r = self.client.get(url, params=params)
            except httpx.TransportError as exc:
                if attempt >= retries:
                    raise PollError(f"{ep.path}: {type(exc).__name__} after {attempt + 1} attempts") from None
                result.retries += 1
                self.sleep(_backoff(attempt))
                continue
            if r.status_code == 429 or r.status_code >= 500:
                if attempt >= retries:
                    raise PollError(f"{ep.path}: HTTP {r.status_code} after {attempt + 1} attempts")
                result.retries += 1
                wait = _retry_after(r.headers.get("retry-after"))
                log.warning("%s %s: HTTP %s, retrying in %.1fs", self.provider, ep.path, r.status_code,
                            wait if wait is not None else _backoff(attempt))
                self.sleep(wait if wait is not None else _backoff(attempt))
                continue
            if r.status_code >= 400:  # 401/403/404: retrying will not help; never echo the key
                raise PollError(f"{ep.path}: HTTP {r.status_code}: {r.text[:200]}")
            try:
                return r.json()
            except ValueError:
                raise PollError(f"{ep.path}: response is not JSON") from None
        raise PollError(f"{ep.path}: retries exhausted")  # pragma: no cover


def _backoff(attempt: int) -> float:
    return min(60.0, 0.5 * 2 ** attempt)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds form), capped at 5 minutes."""
    try:
        return min(300.0, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None
