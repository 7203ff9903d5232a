"""A simulation whose incidents would start after its last minute is refused with a clear
message (it used to fail deep in the traffic generator with an IndexError)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from keywatch.cli import app
from keywatch.simulate import SimConfig, generate


def test_incidents_after_the_stream_end_are_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="would start after the stream ends"):
        list(generate(SimConfig(keys=6, days=1.5, seed=1, incidents=["runaway_loop"])))
    monkeypatch.setenv("COLUMNS", "250")
    out = tmp_path / "ev.jsonl"
    res = CliRunner().invoke(app, ["simulate", "--days", "1", "--out", str(out)])
    assert res.exit_code == 2
    assert "would start after the stream ends" in res.output and "--days" in res.output
    assert not out.exists()
    # a stream long enough for the default 1.5 days of history works
    res = CliRunner().invoke(app, ["simulate", "--days", "2", "--keys", "10", "--incidents", "loud_burst", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 0
