"""faust's fetch loop without four asyncio tasks per message (`KeywatchApp`).

faust's `Consumer._drain_messages` hands each fetched message to the conductor with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: mode's `wait_first`
starts a task for the delivery and one each for waits on flow suspension, the consumer's stop
and its crash, waits for the first to finish, and cancels the other three — 4 tasks started and
3 cancelled per message. With one event per message that was ≈ 28 % of the time the worker
held the interpreter lock (py-spy ``--gil``, session 11), and it weighs on batched messages too.

`FastDrainConsumer` delivers the same way with the three waits kept as standing tasks, made
again only once they have finished, and runs each delivery's first step itself: a delivery that
ends there (most: the message is put into a stream's queue that has room) costs no task and no
wait; one that suspends goes on as one task, under one `asyncio.wait` with the guards (session
15, one event per message: CPU per event 79–90 → 55–59 µs, 14.9k → 16.7k events/s; medians of
three alternating runs; 100 events per message: the same within the noise).
What `wait_first` decides is unchanged: a delivery still blocked when the flow is suspended, or
the consumer stops or crashes, is cancelled; a delivery's exception propagates; either way the
read offset then moves past the message, as in faust. The rest of the loop is
faust 0.15's, line for line but for `yield_every` (faust is pinned < 0.16, as stream/take.py needs).

The app's monitor sensor is `LeanMonitor`: per message, only what faust reads.

>>> issubclass(KeywatchApp, __import__("faust").App), FastDrainTransport.Consumer is FastDrainConsumer
(True, True)
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import Any, AsyncIterator, cast

import faust
from faust.sensors import Monitor
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka


class _Guards:
    """Standing waits on flow suspension, stop and crash; each made again once it has finished."""

    def __init__(self, consumer) -> None:
        self.events = (consumer.suspend_flow, consumer._stopped, consumer._crashed)
        self.tasks: list[asyncio.Future | None] = [None, None, None]

    def current(self) -> list[asyncio.Future]:
        tasks = self.tasks
        for i, t in enumerate(tasks):
            if t is None or t.done():
                tasks[i] = asyncio.ensure_future(self.events[i].wait())
        return cast(list, tasks)

    def cancel(self) -> None:
        for t in self.tasks:
            if t is not None and not t.done():
                t.cancel()


async def _resume(coro, waiting):
    """Run `coro` on from where it suspended, waiting on `waiting` (a future, or None: it only
    yielded), as the task it would have been runs it; cancelled, the waited future is cancelled
    and the cancellation goes into `coro` where it waits."""
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                waiting._asyncio_future_blocking = False  # what a task does with a future it is given
                await asyncio.wait([waiting])  # its outcome goes to `coro`, which awaits it
        except asyncio.CancelledError:
            if waiting is not None:
                waiting.cancel()
            waiting = coro.throw(asyncio.CancelledError())
            continue
        try:
            waiting = coro.send(None)
        except StopIteration as stop:
            return stop.value


async def deliver(callback, message, guards: _Guards) -> None:
    """`callback(message)`, cancelled if a guard fires first (mode's `wait_first`, one task).

    Its first step runs here, as a task's first step would: most deliveries (a put into a queue
    with room) end there, with no task and no wait. One that suspends goes on as a task.
    """
    coro = callback(message)
    try:
        waiting = coro.send(None)
    except StopIteration:
        return
    task = asyncio.ensure_future(_resume(coro, waiting))
    waits = guards.current()
    try:
        await asyncio.wait([task, *waits], return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled() and task.exception() is not None:
        task.result()  # propagate, as `wait_first` does
    for w in waits:
        if w.done() and not w.cancelled() and w.exception() is not None:
            w.result()


class FastDrainConsumer(faust_aiokafka.Consumer):
    async def _drain_messages(self, fetcher) -> None:  # pragma: no cover  (as faust's)
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        # faust: 100. A delivery that ends in its first step no longer suspends this loop (it used
        # to wait on its task), so the loop now yields after each message itself: every 10 or
        # 100, aiokafka's fetcher and the batch loop waited behind it (one event per message
        # on the embedded broker: 13.0k events/s with 10, 16.7k with 1, 14.9k before; medians of
        # three alternating runs).
        yield_every = 1
        num_since_yield = 0
        sleep = asyncio.sleep
        guards = _Guards(self)
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = cast(AsyncIterator, getmany(timeout=1.0))
                await self.sleep(0)  # faust: getmany may be called in a loop never releasing the loop
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            await deliver(callback, message, guards)
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            guards.cancel()
            unset_flag(CONSUMER_FETCHING)


class FastDrainTransport(faust_aiokafka.Transport):
    Consumer = FastDrainConsumer


class LeanMonitor(Monitor):
    """faust's `Monitor` sensor keeping, per message, only what faust itself reads.

    faust calls its sensors for every message in and out and every stream event; the Monitor
    counts them by topic, stream and task (a weak-key lookup each) and times each event, for
    faust's own statistics pages (served only with faust's `debug` or `web_stats_enabled`, which
    keywatch does not set). keywatch reports through its Prometheus metrics
    (stream/metrics.py) and reads none of that. faust's stalled-stream check reads one figure,
    `stream_inbound_time` (when a partition's stream last took an event): kept. Commits,
    rebalances and the rest are rare, and stay as faust's.

    >>> import faust.types; m = LeanMonitor(); tp = faust.types.TP("t", 0)
    >>> m.on_message_in(tp, 5, None); m.on_stream_event_in(tp, 5, None, None) is None
    True
    >>> list(m.stream_inbound_time) == [tp], m.messages_received_total, m.events_total
    (True, 0, 0)
    """

    def on_message_in(self, tp, offset, message) -> None:
        return None

    def on_stream_event_in(self, tp, offset, stream, event) -> None:
        self.stream_inbound_time[tp] = monotonic()
        return None

    def on_stream_event_out(self, tp, offset, stream, event, state=None) -> None:
        return None

    def on_message_out(self, tp, offset, message) -> None:
        return None


class KeywatchApp(faust.App):
    """`faust.App` whose consumer transport is `FastDrainTransport` (the broker URLs unchanged),
    with `LeanMonitor` as its monitor sensor unless one is given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("Monitor", LeanMonitor)
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return FastDrainTransport(self.conf.broker_consumer, self)
