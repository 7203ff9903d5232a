"""`IoClient`: a ClickHouse client whose calls from other threads run on one io thread.

The worker (stream/worker.py) detects batch N+1 on its detect thread while batch N is written
on its io thread; the detect thread's re-read checks and partition restores go to that
thread, queued behind the write in flight, so they see what it stored. (Idle-key baseline
lookups use a client of their own, `StreamState.lookups`: rows not yet written are held in
memory, so they need not wait.)

>>> from concurrent.futures import ThreadPoolExecutor
>>> import threading
>>> class C:
...     def who(self): return threading.current_thread().name
>>> io = ThreadPoolExecutor(1, thread_name_prefix="io")
>>> IoClient(C(), io).who().startswith("io")
True
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor


class IoClient:
    def __init__(self, client, io: ThreadPoolExecutor) -> None:
        self._client, self._io = client, io
        self._io_thread: int | None = io.submit(threading.get_ident).result()

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            if threading.get_ident() == self._io_thread:
                return attr(*args, **kwargs)
            return self._io.submit(attr, *args, **kwargs).result()
        return call
