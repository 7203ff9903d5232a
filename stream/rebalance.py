"""Partition rebalance callbacks of the worker's `Consumer` (stream/consumer.py).

On assignment a partition's core is restored from its snapshot (and a partition the broker
forgot is read as new); on revocation it is snapshotted and parked (stream/pipeline.py). Both
wait for the write in flight and hold the consumer's lock, so they never interleave a batch.
"""

from __future__ import annotations

import logging

log = logging.getLogger("keywatch.worker")


class RebalanceHandler:
    """Mixed into `Consumer`: uses its `app`, `settings`, `pipeline`, `rt`, `lock`, `_drain`, `_collect`, `_run`."""

    async def assigned(self, tps) -> None:
        parts = {tp.partition for tp in tps if tp.topic == self.settings.input_topic}
        async with self.lock:
            await self._drain()
            await self._collect(block=True)  # a forked snapshot in flight is stored first
            async with self.rt.core_lock:
                await self._run(self.pipeline.assign, parts)
            await self._check_log_ends(parts)

    async def revoked(self, tps) -> None:
        parts = {tp.partition for tp in tps if tp.topic == self.settings.input_topic}
        async with self.lock:
            await self._drain()
            await self._collect(block=True)
            async with self.rt.core_lock:
                await self._run(self.pipeline.revoke, parts)

    async def _check_log_ends(self, parts: set[int]) -> None:
        """A partition the broker forgot (restart of the in-memory broker) restarts from scratch.

        Signs: its log ends at or below the offset held in state, or the group has no committed
        offset for it although state holds one (we ack ~1 s after each snapshot, so only a crash
        right after a partition's first snapshot, or offsets expired by retention, also look
        like this; then the restored core's dedupe and the high-water re-check keep rows once).
        """
        tps = [_tp(self.settings.input_topic, p) for p in sorted(parts)]
        try:
            ends = await self.app.consumer.highwaters(*tps)
        except Exception as exc:
            log.warning("could not read log end offsets: %s", exc)
            return
        committed = await self._committed(tps)
        for tp, end in ends.items():
            key = f"{tp.topic}:{tp.partition}"
            held = self.pipeline.in_state.get(key, -1)
            if held < 0 or end is None:
                continue
            if end <= held or (tp in committed and committed[tp] is None):
                log.warning("%s: log ends at %s, committed %s, state holds offset %d: the broker lost this "
                            "partition (restart?); reading it as new", key, end, committed.get(tp, "?"), held)
                self.pipeline.forget_offsets(key)  # high_water stays: re-read ids are still checked

    async def _committed(self, tps) -> dict:
        try:  # faust has no public call for the group's committed offsets
            thread = self.app.consumer._thread
            aio = thread._ensure_consumer()
            return {tp: await thread.call_thread(aio.committed, tp) for tp in tps}
        except Exception as exc:
            log.debug("committed offsets unavailable: %s", exc)
            return {}


def _tp(topic: str, partition: int):
    from faust.types import TP

    return TP(topic, partition)
