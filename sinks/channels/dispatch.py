"""The alert hook: route each new/updated alert to its channels, deliver, record, never raise.

`Dispatcher(...)` is an async callable `await dispatcher(alerts)`. As the worker's hook
(`background=True`) it returns once deliveries are planned and delivers in its own tasks
(`drain()`/`aclose()` wait for them), so the next hook (revocation) never waits on a channel. Per alert and route it asks the `Ledger` whether this is worth sending
(first sight, severity rise, resolve), applies the route's rate limit, then delivers to every
channel concurrently (bounded by `KEYWATCH_CHANNELS_CONCURRENCY`) with retries. Every attempt
becomes a row of `alert_deliveries` and a `keywatch_alert_deliveries_total{channel,outcome}`
count; errors are redacted of every configured secret before they are logged or stored.
Digest routes put alerts in the `DigestBox`; `flush_digests()` sends what is due (or all).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import datetime, timezone
from typing import Any, Callable

import httpx
import msgspec

from keywatch.sinks.channels.config import ChannelsConfig, load_config
from keywatch.sinks.channels.digest import DigestBox, due_period, seconds_until
from keywatch.sinks.channels.email import EmailChannel
from keywatch.sinks.channels.pagerduty import PagerDutyChannel
from keywatch.sinks.channels.retry import Attempt, RetryPolicy, deliver
from keywatch.sinks.channels.router import Ledger, RateLimit, match_routes
from keywatch.sinks.channels.slack import SlackChannel
from keywatch.sinks.channels.webhook import WebhookChannel

log = logging.getLogger("keywatch.channels")
TYPES = {"email": EmailChannel, "slack": SlackChannel, "pagerduty": PagerDutyChannel, "webhook": WebhookChannel}
DELIVERY_COLUMNS = ["alert_id", "version", "kind", "severity", "route", "channel", "channel_type", "event",
                    "attempt", "outcome", "status_code", "error", "duration_ms", "ts"]
MAX_PENDING_BATCHES = 1000
_URL_TOKEN = re.compile(r"(hooks\.slack\.com/\S*|://[^/\s:@]+:[^@\s]+@)")


class Dispatcher:
    def __init__(self, config: ChannelsConfig, settings, *, sink=None, metrics=None,
                 record: Callable[[list[list[Any]]], None] | None = None, clock: Callable[[], float] = time.time,
                 background: bool = False) -> None:
        self.config = config
        self.settings = settings
        self.sink = sink
        self.metrics = metrics
        self._record = record
        self.clock = clock
        self.policy = RetryPolicy.from_settings(settings)
        self.ledger = Ledger()
        self.limits = {r.name: RateLimit(r.rate_limit.max, r.rate_limit.per_s) for r in config.routes if r.rate_limit}
        self.box = DigestBox(settings.data_dir / "channels" / "digest")
        self._client: httpx.AsyncClient | None = None
        self._client_loop = None
        self._sem: asyncio.Semaphore | None = None
        self._digest_task: asyncio.Task | None = None
        self.channels: dict[str, Any] = {}
        # background: the hook returns once deliveries are planned (the worker's hook runner
        # awaits hooks in turn, and revocation must not wait behind a retrying channel).
        self.background = background
        self._tasks: set[asyncio.Task] = set()
        self._secrets = config.secrets() + ([settings.secret("smtp_password")] if settings.smtp_password else [])
        _LOG_FILTER.secrets.update(s for s in self._secrets if s)

    @classmethod
    def from_settings(cls, settings, sink=None, metrics=None, background: bool = False) -> "Dispatcher":
        return cls(load_config(settings.channels_file, settings), settings, sink=sink, metrics=metrics, background=background)

    # --- the hook ------------------------------------------------------------------------------
    async def __call__(self, alerts: list[Any]) -> None:
        try:
            self._ensure_loop_state()
            latest: dict[str, dict[str, Any]] = {}
            for a in alerts:  # several versions of one alert in a batch: the newest speaks for all
                d = a.to_contract() if hasattr(a, "to_contract") else msgspec.to_builtins(a)
                cur = latest.get(d.get("alert_id"))
                if cur is None or int(d.get("version", 1)) >= int(cur.get("version", 1)):
                    latest[d.get("alert_id")] = d
            jobs = [job for d in latest.values() for job in self._plan(d)]
            work = self._run(jobs)
            if not self.background:
                await work
                return
            if len(self._tasks) >= MAX_PENDING_BATCHES:  # far behind: push back on the hook queue
                log.warning("alert channels: %d batches in flight; waiting", len(self._tasks))
                await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.get_running_loop().create_task(work)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        except Exception:  # noqa: BLE001 — the hook must never raise into the worker
            log.exception("alert channels: dispatch failed")

    async def _run(self, jobs: list[tuple]) -> None:
        try:
            await asyncio.gather(*(self._deliver(*job) for job in jobs))
            await self.flush_digests(force=False)
        except Exception:  # noqa: BLE001
            log.exception("alert channels: delivery failed")

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait for background deliveries; True when none is left."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        return not self._tasks

    def _plan(self, d: dict[str, Any]) -> list[tuple]:
        jobs = []
        for route in match_routes(self.config, d):
            allowed: bool | None = None  # one rate-limit decision per alert and route, for all its channels
            for cname in route.channels:
                ch = self.channels[cname]
                key = (route.name, cname, d["alert_id"])
                before = self.ledger.previous(key)
                event = self.ledger.decide(key, str(d.get("severity")), str(d.get("status", "open")))
                if event is None:
                    self._count(cname, "suppressed")
                    continue
                if event == "resolve" and not (ch.sends_resolve and route.send_resolved):
                    continue
                if route.mode == "digest":
                    if event != "resolve":
                        self.box.add(route.name, cname, d)
                        self._count(cname, "digested")
                    continue
                if event != "resolve" and allowed is None:
                    lim = self.limits.get(route.name)
                    allowed = lim is None or lim.allow()
                if event != "resolve" and not allowed:
                    self.ledger.rollback(key, before)
                    self._write([self._row(d, route.name, ch, event, Attempt(0, "rate_limited", 0, "", 0.0))])
                    continue
                jobs.append((d, route.name, ch, event, key, before))
        return jobs

    async def _deliver(self, d: dict[str, Any], route: str, ch, event: str, key: tuple, before: str | None) -> None:
        async def send() -> int:
            async with self._sem:
                return await ch.send(d, event, route)

        last = await deliver(send, self.policy, lambda att: self._attempt(d, route, ch, event, att), self.redact)
        if last.outcome != "delivered":
            self.ledger.rollback(key, before)
            log.warning("alert %s: %s via %s (route %s) failed after %d attempt(s): %s",
                        d.get("alert_id"), event, ch.name, route, last.attempt, last.error)

    def _attempt(self, d: dict[str, Any], route: str, ch, event: str, att: Attempt) -> None:
        self._write([self._row(d, route, ch, event, att)])

    # --- digests -------------------------------------------------------------------------------
    async def flush_digests(self, force: bool = False, routes: list[str] | None = None) -> dict[str, int]:
        """Send each digest route's pending alerts if its time has come (or now, with `force`).
        Returns {route: alerts sent}."""
        self._ensure_loop_state()
        sent: dict[str, int] = {}
        for route in self.config.routes:
            if route.mode != "digest" or (routes and route.name not in routes):
                continue
            period = due_period(route.digest_at, self.clock(), None if force else self.box.last_sent(route.name))
            if period is None:
                continue
            self.box.mark_sent(route.name, period)
            sent[route.name] = 0
            for cname in route.channels:
                sent[route.name] += await self._send_digest(route.name, self.channels[cname], period)
        return sent

    async def _send_digest(self, route: str, ch, period: str) -> int:
        alerts, snap = self.box.take(route, ch.name)
        if not alerts:
            self.box.commit(snap)
            return 0

        async def send() -> int:
            async with self._sem:
                return await ch.send_digest(alerts, route, period)

        d = {"alert_id": f"digest:{route}:{period}", "version": len(alerts), "kind": "digest", "severity": ""}
        last = await deliver(send, self.policy, lambda att: self._attempt(d, route, ch, "digest", att), self.redact)
        if last.outcome == "delivered":
            self.box.commit(snap)
            return len(alerts)
        self.box.restore(route, ch.name, snap)
        log.warning("digest %s via %s failed: %s", route, ch.name, last.error)
        return 0

    async def _digest_timer(self) -> None:
        while True:
            waits = [seconds_until(r.digest_at, self.clock()) for r in self.config.routes if r.mode == "digest"]
            await asyncio.sleep(min(waits) + 1)
            try:
                await self.flush_digests()
            except Exception:  # noqa: BLE001
                log.exception("alert channels: digest failed")

    # --- plumbing ------------------------------------------------------------------------------
    def _ensure_loop_state(self) -> None:
        """The HTTP client and semaphore belong to one event loop; (re)make them for this one."""
        loop = asyncio.get_running_loop()
        if self._client_loop is loop:
            return
        self._client_loop = loop
        self._client = httpx.AsyncClient(timeout=self.settings.channels_timeout_s, follow_redirects=False)
        self._sem = asyncio.Semaphore(self.settings.channels_concurrency)
        self.channels = {n: TYPES[s.type](s, self.settings, self._client) for n, s in self.config.channels.items()}
        if any(r.mode == "digest" for r in self.config.routes):
            self._digest_task = loop.create_task(self._digest_timer())

    async def aclose(self, timeout: float = 10.0) -> None:
        await self.drain(timeout)
        for t in list(self._tasks):
            t.cancel()
        if self._digest_task is not None:
            self._digest_task.cancel()
        if self._client is not None:
            await self._client.aclose()

    def redact(self, text: str) -> str:
        for s in self._secrets:
            if s:
                text = text.replace(s, "<redacted>")
        return _URL_TOKEN.sub("<redacted>", text)

    def _row(self, d: dict[str, Any], route: str, ch, event: str, att: Attempt) -> list[Any]:
        self._count(ch.name, att.outcome)
        return [str(d.get("alert_id")), int(d.get("version") or 0), str(d.get("kind") or ""), str(d.get("severity") or ""),
                route, ch.name, ch.type, event, att.attempt, att.outcome, att.status_code, att.error,
                float(att.duration_ms), datetime.fromtimestamp(self.clock(), tz=timezone.utc)]

    def _count(self, channel: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.deliveries.labels(channel=channel, outcome=outcome).inc()

    def _write(self, rows: list[list[Any]]) -> None:
        try:
            if self._record is not None:
                self._record(rows)
            elif self.sink is not None:
                self.sink.insert("alert_deliveries", rows, DELIVERY_COLUMNS)
        except Exception as exc:  # noqa: BLE001 — losing a record must not lose the delivery
            log.warning("alert channels: cannot record deliveries: %s", self.redact(str(exc))[:300])


class _RedactFilter(logging.Filter):
    """On the httpx/httpcore loggers: httpx logs every request URL at INFO, and a Slack webhook
    URL is a credential. One filter per process; dispatchers add their secrets to it."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001
            return True
        clean = msg
        for s in self.secrets:
            clean = clean.replace(s, "<redacted>")
        clean = _URL_TOKEN.sub("<redacted>", clean)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


_LOG_FILTER = _RedactFilter()
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_LOG_FILTER)


def build_channel_hook(settings, sink=None, metrics=None) -> Dispatcher:
    """The hook `keywatch.hooks.build_alert_hooks` appends when `KEYWATCH_CHANNELS_FILE` is set."""
    return Dispatcher.from_settings(settings, sink=sink, metrics=metrics, background=True)
