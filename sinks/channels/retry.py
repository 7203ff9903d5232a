"""Retries for one delivery: exponential backoff with jitter, `Retry-After` honoured.

Retried: HTTP 429 and 5xx, timeouts and connection errors, SMTP transient (4xx) replies and
dropped connections. Not retried: any other 4xx (a bad request or key will not heal), SMTP 5xx.
Every attempt is reported to `on_attempt` so the dispatcher can record it.

>>> p = RetryPolicy(max_attempts=5, base_s=1.0, max_s=10.0, jitter=0.0)
>>> [p.delay(n) for n in (1, 2, 3, 4, 5)]
[1.0, 2.0, 4.0, 8.0, 10.0]
>>> p.delay(1, retry_after="30")   # the server asked for 30 s; capped at max_s
10.0
>>> classify(429), classify(503), classify(404), classify(202)
('retry', 'retry', 'failed', 'delivered')
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Awaitable, Callable


@dataclass(frozen=True)
class Attempt:
    attempt: int
    outcome: str  # delivered | retry | failed
    status_code: int
    error: str
    duration_ms: float


class DeliveryError(Exception):
    """One attempt failed. `retry`: worth trying again; `retry_after`: the server's hint."""

    def __init__(self, error: str, status_code: int = 0, retry: bool = True, retry_after: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.status_code = status_code
        self.retry = retry
        self.retry_after = retry_after


def classify(status: int) -> str:
    if 200 <= status < 300:
        return "delivered"
    if status == 429 or status >= 500 or status == 408:
        return "retry"
    return "failed"


def check_response(status: int, retry_after: str | None = None) -> None:
    """Raise `DeliveryError` for a non-2xx HTTP status."""
    outcome = classify(status)
    if outcome != "delivered":
        raise DeliveryError(f"HTTP {status}", status, retry=outcome == "retry", retry_after=retry_after)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_s: float = 1.0
    max_s: float = 60.0
    jitter: float = 0.5  # the delay is scaled by a random factor in [1 - jitter, 1]

    @classmethod
    def from_settings(cls, settings) -> "RetryPolicy":
        return cls(settings.channels_max_attempts, settings.channels_backoff_s, settings.channels_backoff_max_s)

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        hinted = _parse_retry_after(retry_after)
        if hinted is not None:
            return min(self.max_s, hinted)  # the server's word, no jitter
        d = min(self.max_s, self.base_s * 2 ** (attempt - 1))
        return d * (1 - self.jitter * random.random()) if self.jitter else d


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


async def deliver(send: Callable[[], Awaitable[int]], policy: RetryPolicy,
                  on_attempt: Callable[[Attempt], None], redact: Callable[[str], str] = str) -> Attempt:
    """Call `send` (returns a 2xx status or raises) until it succeeds or gives up; the last attempt."""
    attempt = 0
    while True:
        attempt += 1
        t0 = time.perf_counter()
        retry_after = None
        try:
            status = await send()
            result = Attempt(attempt, "delivered", status, "", _ms(t0))
        except DeliveryError as exc:
            retry_after = exc.retry_after
            outcome = "retry" if exc.retry and attempt < policy.max_attempts else "failed"
            result = Attempt(attempt, outcome, exc.status_code, redact(exc.error)[:500], _ms(t0))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 — a channel bug must not escape into the worker
            outcome = "retry" if attempt < policy.max_attempts else "failed"
            result = Attempt(attempt, outcome, 0, redact(describe(exc))[:500], _ms(t0))
        on_attempt(result)
        if result.outcome != "retry":
            return result
        await asyncio.sleep(policy.delay(attempt, retry_after))


def describe(exc: BaseException) -> str:
    """A short error text. httpx messages can embed the request URL (a Slack URL is a secret),
    so the caller still passes it through `redact`."""
    name = type(exc).__name__
    msg = str(exc).strip()
    return f"{name}: {msg}" if msg else name


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)
