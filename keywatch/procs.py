"""Child processes (the embedded broker, `db serve`, workers in the bench, demo and tests)."""

from __future__ import annotations

import signal
import subprocess


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
