"""stream/drain.py: faust's per-message delivery with standing guard tasks decides as mode's
`wait_first` did — a delivery runs to the end unless the flow is suspended or the consumer stops
or crashes while it is blocked; its exception propagates — and starts a task only for a message
whose delivery suspends."""

from __future__ import annotations

import asyncio

import pytest
from mode.utils.locks import Event

from keywatch.stream.drain import FastDrainConsumer, KeywatchApp, _Guards, deliver


class _Consumer:
    def __init__(self) -> None:
        self.suspend_flow, self._stopped, self._crashed = Event(), Event(), Event()


def test_deliveries_complete_and_the_guards_stand():
    async def main():
        c = _Consumer()
        guards = _Guards(c)
        got = []

        async def callback(m):
            await asyncio.sleep(0)  # a delivery that yields once (a queue put, a lock)
            got.append(m)

        await deliver(callback, 1, guards)
        first = list(guards.tasks)
        for m in range(2, 50):
            await deliver(callback, m, guards)
        # every message delivered, in order; the same three guard tasks served them all
        assert got == list(range(1, 50))
        assert guards.tasks == first and not any(t.done() for t in first)
        guards.cancel()
        await asyncio.sleep(0)
        assert all(t.cancelled() for t in first)

    asyncio.run(main())


@pytest.mark.parametrize("guard", ["suspend_flow", "_stopped", "_crashed"])
def test_a_blocked_delivery_is_cancelled_when_a_guard_fires(guard):
    async def main():
        c = _Consumer()
        guards = _Guards(c)
        started, finished = asyncio.Event(), []
        cancelled = []

        async def blocked(m):
            started.set()
            try:
                await asyncio.sleep(3600)  # a put into a full queue
            except asyncio.CancelledError:
                cancelled.append(m)
                raise
            finished.append(m)

        async def fire():
            await started.wait()
            getattr(c, guard).set()

        firing = asyncio.ensure_future(fire())
        await asyncio.wait_for(deliver(blocked, "m", guards), timeout=5)
        await firing
        await asyncio.sleep(0)
        assert cancelled == ["m"] and finished == []
        # while the flow stays suspended (or stopped), the next delivery still gets its first
        # step — as with a fresh `suspend_flow.wait()` task: one that does not block completes,
        # one that blocks is cancelled there at once
        ran = []

        async def quick(m):
            ran.append(m)

        await asyncio.wait_for(deliver(quick, "n", guards), timeout=5)
        assert ran == ["n"]
        await asyncio.wait_for(deliver(blocked, "o", guards), timeout=5)
        await asyncio.sleep(0)
        assert cancelled == ["m", "o"] and finished == []
        guards.cancel()

    asyncio.run(main())


def test_a_delivery_that_does_not_suspend_starts_no_task():
    async def main():
        guards = _Guards(_Consumer())
        got = []

        async def put(m):  # a put into a queue with room: no await suspends
            got.append(m)

        made = []
        loop = asyncio.get_running_loop()
        loop.set_task_factory(lambda lp, coro, **kw: made.append(coro) or asyncio.Task(coro, loop=lp, **kw))
        for m in range(100):
            await deliver(put, m, guards)
        assert got == list(range(100))
        assert made == []  # no task per message (the guards start with the first delivery that waits)
        loop.set_task_factory(None)
        guards.cancel()

    asyncio.run(main())


def test_a_suspended_delivery_gets_what_it_waited_for():
    async def main():
        guards = _Guards(_Consumer())
        fut = asyncio.get_running_loop().create_future()
        got = []

        async def waits(m):
            got.append((m, await fut))  # e.g. a put into a full queue, until there is room
            await asyncio.sleep(0)
            return m

        asyncio.get_running_loop().call_later(0.01, fut.set_result, "room")
        await asyncio.wait_for(deliver(waits, "m", guards), timeout=5)
        assert got == [("m", "room")]
        bad = asyncio.get_running_loop().create_future()

        async def fails(m):
            await bad

        asyncio.get_running_loop().call_later(0.01, bad.set_exception, OSError("broker gone"))
        with pytest.raises(OSError, match="broker gone"):
            await asyncio.wait_for(deliver(fails, "n", guards), timeout=5)
        guards.cancel()

    asyncio.run(main())


def test_a_delivery_error_propagates():
    async def main():
        guards = _Guards(_Consumer())

        async def bad(m):
            raise ValueError(f"cannot deliver {m}")

        with pytest.raises(ValueError, match="cannot deliver x"):
            await deliver(bad, "x", guards)
        guards.cancel()

    asyncio.run(main())


def test_the_copied_loop_is_of_the_installed_faust():
    """stream/drain.py copies faust 0.15.3's fetch loop with one change; another faust release
    (pyproject allows < 0.16) may change that loop, and the copy must then be made again."""
    import hashlib
    import inspect

    import faust.transport.consumer as faust_consumer

    src = inspect.getsource(faust_consumer.Consumer._drain_messages)
    assert "callback(message), self.suspend_flow.wait()" in src  # the one call drain.py replaces
    assert hashlib.sha256(src.encode()).hexdigest()[:16] == "44a2500309e83c63", "faust's fetch loop changed: re-copy it"


def test_the_worker_app_fetches_with_the_fast_consumer():
    app = KeywatchApp("kw-drain-test", broker="kafka://127.0.0.1:1")
    assert type(app.transport).Consumer is FastDrainConsumer
    assert [str(u) for u in app.conf.broker_consumer] == ["kafka://127.0.0.1:1"]


def test_the_worker_app_monitors_only_what_faust_reads():
    """faust's stalled-stream check reads `stream_inbound_time`; nothing else per message."""
    from faust.types import TP

    from keywatch.stream.drain import LeanMonitor

    app = KeywatchApp("kw-drain-test", broker="kafka://127.0.0.1:1")
    assert isinstance(app.monitor, LeanMonitor)
    list(app.on_init_dependencies())
    assert app.monitor in set(app.sensors)
    tp = TP("t", 0)
    app.sensors.on_message_in(tp, 1, None)
    app.sensors.on_stream_event_in(tp, 1, None, None)
    assert tp in app.monitor.stream_inbound_time and app.monitor.events_total == 0


def test_the_worker_keeps_the_log_level_it_was_given():
    """faust's spinner would set the root logger to DEBUG at WARNING: every debug call of the
    Kafka client then builds a record (the control shows faust's own worker doing it)."""
    import logging

    from faust.worker import Worker

    from keywatch.stream.worker import faust_worker

    app = KeywatchApp("kw-drain-test", broker="kafka://127.0.0.1:1")
    for make, expected in ((lambda: Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False), logging.DEBUG),
                           (lambda: faust_worker(app, "warning"), logging.WARNING)):
        root = logging.Logger("kw-root-test", logging.WARNING)
        root.addHandler(logging.NullHandler())
        make().on_setup_root_logger(root, logging.WARNING)
        assert root.level == expected
