"""Shared helpers for tests/security (imported by the test modules; not a test module)."""

from __future__ import annotations

import os


def fuzz_examples(default: int) -> int:
    """Examples per property: the CI default, or `KEYWATCH_FUZZ_EXAMPLES` for a long run."""
    raw = os.environ.get("KEYWATCH_FUZZ_EXAMPLES", "").strip()
    return max(1, int(raw)) if raw.isdigit() else default
