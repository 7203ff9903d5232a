"""Runs alert hooks (channels, revocation) off the ingestion path, from a bounded queue.

The consumer calls `submit(alerts)` and moves on; one background task feeds each batch to every
hook in turn. Synchronous hooks run in a thread so a slow SMTP server or provider API never
blocks the event loop. A hook that raises is logged and counted; the next batch still runs.
When the queue is full (hooks far behind), new batches are dropped with a warning: the alerts
are already stored in ClickHouse, and stalling detection would be worse.

At shutdown `aclose(timeout)` drains the queue, then awaits each hook's own ``aclose()`` /
``drain()`` (the channel dispatcher delivers in background tasks), so in-flight deliveries
finish instead of being cancelled with the event loop.

>>> import asyncio
>>> seen = []
>>> async def demo():
...     r = HookRunner([seen.extend], maxsize=10)
...     task = asyncio.create_task(r.run())
...     r.submit(["a1"])
...     await r.drain(1.0)
...     task.cancel()
>>> asyncio.run(demo()); seen
['a1']
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Callable

log = logging.getLogger(__name__)


class HookRunner:
    def __init__(self, hooks: list[Callable[[list[Any]], Any]], maxsize: int = 10_000, metrics=None) -> None:
        self.hooks = list(hooks)
        self.queue: asyncio.Queue[list[Any]] = asyncio.Queue(maxsize=maxsize)
        self.metrics = metrics
        self.dropped = 0
        self.failures = 0

    def submit(self, alerts: list[Any]) -> bool:
        if not self.hooks or not alerts:
            return True
        try:
            self.queue.put_nowait(list(alerts))
            return True
        except asyncio.QueueFull:
            self.dropped += len(alerts)
            log.warning("alert hooks are behind (%d batches queued); %d alerts not passed to hooks",
                        self.queue.qsize(), len(alerts))
            return False

    async def run(self) -> None:
        while True:
            alerts = await self.queue.get()
            try:
                for hook in self.hooks:
                    await self._call(hook, alerts)
            finally:
                self.queue.task_done()

    async def _call(self, hook, alerts: list[Any]) -> None:
        name = getattr(hook, "__qualname__", repr(hook))
        try:
            if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(getattr(hook, "__call__", None)):
                await hook(alerts)
            else:
                result = await asyncio.to_thread(hook, alerts)
                if inspect.isawaitable(result):
                    await result
        except Exception:
            self.failures += 1
            log.exception("alert hook %s failed", name)

    async def drain(self, timeout: float) -> bool:
        """Wait (bounded) until queued batches are handled; True when the queue emptied."""
        try:
            await asyncio.wait_for(self.queue.join(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def aclose(self, timeout: float = 5.0) -> None:
        """Drain the queue, then let every hook that has ``aclose``/``drain`` finish its work."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.drain(timeout)
        for hook in self.hooks:
            close = getattr(hook, "aclose", None) or getattr(hook, "drain", None)
            if close is None or not callable(close):
                continue
            left = max(0.1, deadline - loop.time())
            try:
                result = close(left)
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, left + 1.0)
            except Exception:
                log.exception("closing alert hook %s failed", getattr(hook, "__qualname__", repr(hook)))
