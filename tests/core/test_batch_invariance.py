"""Detection is online in event time: the alerts do not depend on how the stream is cut into batches.

The same simulated file (attacks, a runaway loop, benign changes) is replayed through the default
core in chunks of 7, 500 and 5000 lines and in one piece; every run must raise the same alerts
with the same severities, times and scores.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from keywatch.models.registry import build_core
from keywatch.replay import replay
from keywatch.settings import Settings
from keywatch.simulate import SimConfig, write_jsonl
from keywatch.stream.decode import EventDecoder


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inv") / "events.jsonl"
    write_jsonl(SimConfig(keys=30, projects=6, days=2.0, seed=5, warmup_days=1.0), path)
    return path


def _alerts(path: Path, tmp: Path, chunk_lines: int) -> list[tuple]:
    settings = Settings()
    out = tmp / f"alerts-{chunk_lines}.jsonl"
    replay([path], out, build_core(settings), EventDecoder.from_settings(settings, streaming=False),
           chunk_lines=chunk_lines)
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    return sorted((a["kind"], a["key_id"] or "", a["project"] or "", a["severity"], a["detected_at"],
                   a["started_at"], round(a["score"], 2)) for a in rows)


def test_alerts_do_not_depend_on_batch_size(sim_file: Path, tmp_path: Path) -> None:
    whole = _alerts(sim_file, tmp_path, 10**9)
    kinds = {a[0] for a in whole}
    assert "key_theft" in kinds and "cost_spike" in kinds  # the file exercises both main detectors
    for chunk in (7, 500, 5000):
        got = _alerts(sim_file, tmp_path, chunk)
        assert got == whole, (chunk, sorted(set(got) ^ set(whole))[:10])


def test_skipping_rows_changes_no_alert(sim_file: Path, tmp_path: Path) -> None:
    """`keywatch replay` keeps only alerts, so it does not build score and table rows; the alerts
    (every version, full precision) are those of a run that builds and collects every row."""
    settings = Settings()
    decoder = EventDecoder.from_settings(settings, streaming=False)
    collected: dict[str, int] = {"scores": 0, "rows": 0}

    def on_output(out) -> None:
        collected["scores"] += len(out.scores)
        collected["rows"] += sum(len(r) for r in out.rows.values())

    with_rows, without = tmp_path / "with.jsonl", tmp_path / "without.jsonl"
    replay([sim_file], with_rows, build_core(settings), decoder, on_output=on_output)
    replay([sim_file], without, build_core(settings), decoder)
    assert collected["scores"] > 1000 and collected["rows"] > 1000  # rows were built in the first run
    assert without.read_bytes() == with_rows.read_bytes()
    events = decoder.decode_block(sim_file.read_bytes().splitlines()[:5000])
    assert build_core(settings).process(events).scores  # the same events give score rows
    out = build_core(settings).process(events, rows=False)
    assert not out.scores and not any(out.rows.values())
