"""The worker's batches: up to a message count *or* a byte budget, filled while the last one is handled.

faust's `Stream.noack_take(max_, within)` (the buffered `take()` that leaves acking to the
caller) has two costs for keywatch:

* It counts messages only. A batch pays fixed costs (one INSERT per table, a snapshot check,
  numpy set-up in the detectors: ≈ 0.1 s on embedded chDB), so batches of 500 one-event
  messages spent ≈ 200 µs per event on them, while 500 messages of 100 events each are already
  50k events. A byte budget bounds a batch by its size instead, whatever the packing.
* It stops buffering while the caller handles a batch (the next batch only starts to fill
  when the caller asks for it), so the fill — faust's per-message work — never overlaps the
  detection of the batch before.

`take_batches` is `noack_take` with both changed: a batch is yielded when it holds
`max_messages` messages or `max_bytes` bytes of message values (one message bigger than the
budget is a batch of its own), or `within` seconds after the caller asked for it — sooner if
its first message came earlier, while the caller was busy with the batch before; and the
next batch fills while the caller works on this one (when it is full, faust's stream waits:
the same backpressure `noack_take` has). Nothing is acked here: the caller acks each message
after its output is stored (stream/consumer.py). It relies on the same `Stream` internals as
`noack_take` (`add_processor`, `_enable_passive`, `current_event`), so faust is pinned < 0.16.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from mode.utils.aiter import aiter


async def take_batches(stream, max_messages: int, max_bytes: int, within: float) -> AsyncIterator[list]:
    """Yield lists of faust events (`event.message.value` raw bytes) from `stream`."""
    loop = asyncio.get_running_loop()
    buffer: list = []
    size = 0  # bytes of message values in `buffer`
    first_at = 0.0  # loop time the first message of `buffer` arrived
    full = asyncio.Event()  # the buffer is a whole batch
    room = asyncio.Event()  # the buffer may grow (cleared while a full batch waits for the caller)
    room.set()

    async def add_to_buffer(value):
        nonlocal size, first_at
        try:
            if not room.is_set():  # a full batch waits for the caller (backpressure)
                await stream.wait(room)
            event = stream.current_event
            if event is None:
                raise RuntimeError("take buffer found current_event is None")
            if not buffer:
                first_at = loop.time()
            buffer.append(event)
            size += len(event.message.value or b"")
            if len(buffer) >= max_messages or size >= max_bytes:
                room.clear()
                full.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # as faust's take(): the stream crashes rather than lose a message
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    acks = stream.enable_acks
    stream.enable_acks = False  # acked by the caller, after the write
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            if not full.is_set():
                # Wait for the rest of the batch: `within` from when the caller asked, or from the
                # first message if it came earlier (buffered while the last batch was handled).
                asked = loop.time()
                left = (first_at if buffer else asked) + within - asked
                if left > 0:
                    await stream.wait_for_stopped(full, timeout=left)
            if not buffer:
                continue
            batch = buffer[:]
            buffer.clear()
            size = 0
            full.clear()
            room.set()  # the next batch fills while the caller handles this one
            yield batch
    finally:
        stream.enable_acks = acks
        stream._processors.remove(add_to_buffer)
