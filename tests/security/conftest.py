"""Fixtures for the security tests: hostile input, poisoned telemetry, secrets, signatures.

Fuzzing is bounded in CI. For a longer run on demand, set ``KEYWATCH_FUZZ_EXAMPLES`` (examples
per property), e.g. ``KEYWATCH_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/security -k fuzz``.
The local provider servers are the revocation tests' (tests/revocation/revocation_servers.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "revocation"))
