"""HookRunner shutdown: queued batches are handled and each hook's own `aclose` is awaited."""

from __future__ import annotations

import asyncio

from keywatch.stream.hookrunner import HookRunner


class SlowHook:
    """Like the channel dispatcher: accepts alerts at once, delivers in background tasks."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task] = set()
        self.delivered: list[str] = []
        self.closed = False

    async def __call__(self, alerts):
        async def deliver(a):
            await asyncio.sleep(0.2)
            self.delivered.append(a)
        for a in alerts:
            t = asyncio.get_running_loop().create_task(deliver(a))
            self.tasks.add(t)

    async def aclose(self, timeout: float = 10.0) -> None:
        await asyncio.wait(self.tasks, timeout=timeout)
        self.closed = True


def test_aclose_waits_for_in_flight_deliveries():
    hook = SlowHook()

    async def main():
        runner = HookRunner([hook], maxsize=10)
        task = asyncio.create_task(runner.run())
        runner.submit(["a1", "a2"])
        await runner.aclose(5.0)
        task.cancel()

    asyncio.run(main())
    assert hook.closed and sorted(hook.delivered) == ["a1", "a2"]
