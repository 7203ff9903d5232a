"""Child processes (the embedded broker, `db serve`, workers in the bench, demo and tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 30.0) -> int:
    """Send `sig`, wait up to `grace` seconds, then SIGKILL; the exit code (also if it had exited)."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


def child_pids(pid: int) -> list[int]:
    """The live children of process `pid` (Linux /proc; [] elsewhere or once it is gone)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system, every thread) process `pid` has used so far (Linux /proc, in
    clock ticks of 10 ms; None elsewhere or once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def libc_prctl():
    """libc's prctl on Linux, else None. Look it up in the parent: a forked child should import
    nothing."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(sig: int = signal.SIGTERM):
    """A `preexec_fn` for `subprocess.Popen`: the child gets `sig` when its parent dies (Linux
    PR_SET_PDEATHSIG), so a launcher killed with -9 leaves no orphans; None elsewhere. The kernel
    means the parent *thread*: start such children from a thread that lives as long as they do."""
    prctl = libc_prctl()
    if prctl is None:
        return None
    return lambda: prctl(1, int(sig))  # PR_SET_PDEATHSIG
