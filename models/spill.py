"""Idle keys' packed state on local disk: a mapping whose values live in a temporary file.

Packing an idle key (models/keytheft_cold.py, models/costspike_cold.py) turns ≈ 2–5 KB of
objects into ≈ 0.3 and ≈ 0.15 KB of bytes, and most tracked keys are idle: at 100k mostly idle
keys those bytes were ≈ 0.45 KB a key of the resident set, as scattered small objects. A
`SpillDict` writes each value to an unlinked temporary file and keeps one int per key in memory:
where the bytes are, how many items the value has, and a `head` — the number the detector's
expiry reads (a key's last-active time) — so a sweep does not read the file. Values are read
back when a key is next needed, which it was anyway (a wake unpacks the state).

Values are `bytes` or tuples of bytes. The file is only appended to; a value replaced or
deleted leaves dead bytes, and once they exceed both the live bytes and `COMPACT_MIN` the live
values move to a new file, `COMPACT_STEP` with each later change (`_move`): 4–5 ms the longest
pause at 100k idle keys, not one copy of all (0.35 s; 3.6 s at a million: keywatch/bench_spill.py).
Meanwhile a value is read from whichever file its int names. A forked snapshot child
(stream/snapfork.py) holds the index as it was at the fork and its own descriptors of both files:
the parent only appends, and a compaction's new file is not the child's.

Where: `configure` (from `KEYWATCH_IDLE_SPILL_DIR`; by default the system's temporary
directory, which should be on disk, not tmpfs); `"memory"` keeps values in memory. A file that
cannot be created or written (a full disk) is logged once and the values stay in memory. A
`SpillDict` pickles as a plain dict (snapshots read by older code, and by this one, alike).

>>> d = SpillDict(len)                         # head: here a value's length
>>> d["a"] = b"state"; d["b"] = (b"x" * 9, b"y")
>>> d["a"], d["b"], len(d), "a" in d, dict(d.heads()), d.items_held()
(b'state', (b'xxxxxxxxx', b'y'), 2, True, {'a': 5, 'b': 2}, 3)
>>> import pickle; del d["b"]; pickle.loads(pickle.dumps(d)) == {"a": d["a"]}
True
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

log = logging.getLogger(__name__)

COMPACT_MIN = 16 << 20  # dead bytes below this are left (a compaction moves every live value)
COMPACT_STEP = 128  # values a compaction moves per change of the mapping (0: all at once)
MEMORY = "memory"
_DIR: str | None = None  # `configure`d; None: the system's temporary directory
# One int per key: head (biased, so negative heads fit) | file | offset | length | items (0: bytes).
# The file bit is the dict's `_gen` once the value is in the current file; a compaction flips
# `_gen`, so every value then names the old file without an int being rewritten.
_BIAS, _GEN, _OFFSETS = 1 << 63, 1 << 95, (1 << 47) - 1
_OFF, _LEN = 48, 16


def configure(directory: str) -> None:
    """Where new `SpillDict`s keep their files: a directory, "" (the system's temporary
    directory) or "memory" (no file). The worker's `build_core` calls it with its settings."""
    global _DIR
    _DIR = directory or None


_WARNED: set[str] = set()  # directories warned about (`_warn_if_in_memory`): once each


def memory_backed(path: str) -> bool:
    """Is `path` on a filesystem held in memory (tmpfs, ramfs: Linux `/proc/mounts`)? False
    where that cannot be told."""
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            mounts = [fields[1:3] for fields in map(str.split, f) if len(fields) > 2]
    except OSError:
        return False
    real = os.path.realpath(path)
    under = [m for m in mounts if real == m[0] or real.startswith(m[0].rstrip("/") + "/")]
    return bool(under) and max(under, key=lambda m: len(m[0]))[1] in ("tmpfs", "ramfs")


def _warn_if_in_memory(directory: str) -> None:
    if directory not in _WARNED and memory_backed(directory):
        _WARNED.add(directory)
        log.warning("the spill file of idle keys' state is in %s, a filesystem held in memory: that state "
                    "is in memory again; set KEYWATCH_IDLE_SPILL_DIR to a directory on disk", directory)


def _encode(value: bytes | tuple) -> tuple[bytes, int]:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), 0
    if value.__class__ is not tuple or not 0 < len(value) <= 0xFFFF:
        raise TypeError(f"a SpillDict value is bytes or a tuple of 1 to 65535 bytes, not {type(value).__name__}")
    return b"".join(len(v).to_bytes(4, "little") + bytes(v) for v in value), len(value)


def _decode(raw: bytes, items: int) -> bytes | tuple:
    if not items:
        return raw
    out, at = [], 0
    for _ in range(items):
        n = int.from_bytes(raw[at:at + 4], "little")
        out.append(raw[at + 4:at + 4 + n])
        at += 4 + n
    return tuple(out)


class SpillDict(MutableMapping):
    """key → bytes or a tuple of bytes, the bytes in a temporary file (see the module)."""

    def __init__(self, head: Callable[[Any], int], items: Any = (), directory: str | None = None) -> None:
        self.head = head  # value → an int kept in memory (`heads`)
        self._dir = _DIR if directory is None else directory
        self._index: dict[Any, int] = {}  # key → packed int (see `_BIAS`)
        self._mem: dict[Any, Any] = {}  # values kept in memory ("memory", or the file failed)
        self._file = None
        self._end = 0  # the file's length
        self._dead = 0  # bytes of replaced and deleted values
        self._held = 0  # items of all values (`items_held`)
        self._gen = 0  # the file bit of values in `_file` (0 or `_GEN`)
        # While compacting: the file the values move from, the keys still to move (some gone or
        # moved already), the old file's length and live bytes; and how many compactions started.
        self._old, self._moving, self._old_end, self._old_live, self.compactions = None, [], 0, 0, 0
        self.update(items)

    # --- the file -----------------------------------------------------------------------------
    def _fd(self) -> int | None:
        if self._dir == MEMORY:
            return None
        if self._file is None:
            try:
                self._file = tempfile.TemporaryFile(prefix="keywatch-idle-", dir=self._dir)
            except OSError as e:
                self._fail(e)
                return None
            _warn_if_in_memory(self._dir or tempfile.gettempdir())
        return self._file.fileno()

    def _fail(self, e: OSError) -> None:
        log.warning("idle key state stays in memory: its spill file failed (%s: %s)", type(e).__name__, e)
        self._dir = MEMORY

    def _write(self, data: bytes) -> int | None:
        """Append `data`; its offset, or None if it could not be written (then: memory)."""
        fd = self._fd()
        if fd is None:
            return None
        at, view = self._end, memoryview(data)
        try:
            while view:
                n = os.pwrite(fd, view, at + len(data) - len(view))
                view = view[n:]
        except OSError as e:
            self._fail(e)
            return None
        self._end += len(data)
        return at

    def _read(self, packed: int) -> bytes | tuple:
        n, off = packed >> _LEN & 0xFFFFFFFF, packed >> _OFF & _OFFSETS
        raw = os.pread((self._file if packed & _GEN == self._gen else self._old).fileno(), n, off)
        if len(raw) != n:
            raise OSError(f"spill file: read {len(raw)} of {n} bytes at {off}")
        return _decode(raw, packed & 0xFFFF)

    def _step(self) -> None:
        """After a change: move the next values of a compaction, or start one once the dead
        bytes exceed both the live ones and `COMPACT_MIN`."""
        if self._old is not None:
            self._move(COMPACT_STEP)
        elif self._dead > COMPACT_MIN and self._dead > self._end - self._dead:
            self._old, self._old_end, self._old_live = self._file, self._end, self._end - self._dead
            self._file, self._end, self._dead = None, 0, 0
            self._gen ^= _GEN  # every value now names the old file
            self.compactions += 1
            self._moving = list(self._index)
            self._move(COMPACT_STEP)

    def _move(self, count: int) -> None:
        """Move up to `count` values (0: all) from the old file to the current one; close the
        old one after the last (a snapshot child may still hold its own descriptor)."""
        moving, index, gen, fd = self._moving, self._index, self._gen, self._old.fileno()
        while moving:
            k = moving.pop()
            packed = index.get(k)
            if packed is None or packed & _GEN == gen:
                continue  # deleted, or replaced into the current file, since the start
            n, off = packed >> _LEN & 0xFFFFFFFF, packed >> _OFF & _OFFSETS
            raw = os.pread(fd, n, off)
            self._old_live -= n
            at = self._write(raw)
            if at is None:  # the new file failed: this value (and the ones after it) in memory
                del index[k]
                self._mem[k] = _decode(raw, packed & 0xFFFF)
            else:
                index[k] = packed & ~(_OFFSETS << _OFF | _GEN) | gen | at << _OFF
            count -= 1
            if count == 0:
                return
        # The last close frees the file's blocks: ≈ 16 ms for 44 MB here, off the detection thread.
        threading.Thread(target=self._old.close, name="keywatch-spill-close", daemon=True).start()
        self._old, self._old_end, self._old_live = None, 0, 0

    # --- the mapping --------------------------------------------------------------------------
    def __setitem__(self, key, value) -> None:
        if key in self:
            del self[key]
        raw, items = _encode(value)
        at = self._write(raw) if len(raw) <= 0xFFFFFFFF else None
        self._held += items or 1
        if at is None:
            self._mem[key] = value
        else:
            self._index[key] = (self.head(value) + _BIAS) << 96 | self._gen | at << _OFF | len(raw) << _LEN | items
        if self._old is not None:
            self._move(COMPACT_STEP)

    def __getitem__(self, key):
        packed = self._index.get(key)
        if packed is None:
            return self._mem[key]
        return self._read(packed)

    def get(self, key, default=None):
        packed = self._index.get(key)
        if packed is None:
            return self._mem.get(key, default)
        return self._read(packed)

    def pop(self, key, *default):
        if key not in self._index and key not in self._mem and default:
            return default[0]  # without the KeyError that `MutableMapping.pop` raises and catches
        value = self[key]
        del self[key]
        return value

    def __delitem__(self, key) -> None:
        packed = self._index.pop(key, None)
        if packed is None:
            value = self._mem.pop(key)
            self._held -= len(value) if value.__class__ is tuple else 1
            return
        self._held -= packed & 0xFFFF or 1
        if packed & _GEN == self._gen:
            self._dead += packed >> _LEN & 0xFFFFFFFF
        else:  # still in the old file: it leaves with that file
            self._old_live -= packed >> _LEN & 0xFFFFFFFF
        self._step()

    def __contains__(self, key) -> bool:
        return key in self._index or key in self._mem

    def __iter__(self) -> Iterator:
        yield from list(self._index)
        yield from list(self._mem)

    def __len__(self) -> int:
        return len(self._index) + len(self._mem)

    # --- what the detectors read without the file ---------------------------------------------
    def heads(self) -> Iterator[tuple[Any, int]]:
        """(key, head) of every key, from memory."""
        for k, packed in list(self._index.items()):
            yield k, (packed >> 96) - _BIAS
        for k, v in list(self._mem.items()):
            yield k, self.head(v)

    def items_held(self) -> int:
        """Items of all values: a tuple counts its length, bytes one."""
        return self._held

    @property
    def compacting(self) -> bool:
        """Are values moving to a new file (`_move`)?"""
        return self._old is not None

    def in_memory(self) -> int:
        """Keys whose value is held in memory ("memory", or the file failed)."""
        return len(self._mem)

    def file_bytes(self) -> tuple[int, int]:
        """(bytes in the files, of them dead): the old file's too while a compaction moves values."""
        return self._end + self._old_end, self._dead + self._old_end - self._old_live

    def __del__(self) -> None:  # the files go with their last descriptors (no ResourceWarning)
        for name in ("_file", "_old"):
            f = self.__dict__.get(name)
            if f is not None:
                f.close()

    def __reduce__(self):
        return dict, (dict(self.items()),)


def spill_totals(detectors) -> tuple[int, int]:
    """(live bytes in the detectors' spill files, keys whose packed state is in memory instead)."""
    disk = mem = 0
    for det in detectors:
        cold = getattr(det, "cold", None)
        if isinstance(cold, SpillDict):
            end, dead = cold.file_bytes()
            disk, mem = disk + end - dead, mem + cold.in_memory()
    return disk, mem
