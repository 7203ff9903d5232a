"""Every fixture normalises to exactly its expected canonical output; ids are deterministic."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from keywatch.models.core import DetectionCore
from keywatch.models.events import to_dict
from keywatch.stream.connectors.ingest import FORMATS, Ingester, documents, open_input
from keywatch.stream.connectors.join import RequestJoin
from keywatch.stream.decode import EventDecoder

FIX = Path(__file__).parent / "fixtures"
CASES = sorted((FIX / "expected").glob("*.expected.json"))


def _source(expected: Path) -> Path:
    stem = expected.name.removesuffix(".expected.json")
    return next(p for p in FIX.iterdir() if p.is_file() and p.name.split(".")[0] == stem)


def run(path: Path, fmt: str, ing: Ingester | None = None):
    ing = ing or Ingester(fmt, EventDecoder())
    events, dead = [], []
    for ev, dl in ing.feed_file(path):
        events += ev
        dead += dl
    return events, dead


@pytest.mark.parametrize("expected", CASES, ids=[c.name.split(".")[0] for c in CASES])
def test_fixture_normalises_exactly(expected: Path) -> None:
    exp = json.loads(expected.read_text())
    events, dead = run(_source(expected), exp["format"])
    assert [to_dict(e) for e in events] == exp["events"]
    assert [[d.reason, d.error] for d in dead] == exp["dead_letters"]


def test_every_format_has_a_fixture() -> None:
    covered = {json.loads(c.read_text())["format"] for c in CASES}
    assert covered == set(FORMATS) - {"canonical"}


def test_gzip_cloudtrail_and_pretty_printed_documents(tmp_path: Path) -> None:
    gz = tmp_path / "trail.json.gz"
    with open(FIX / "cloudtrail.json", "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    plain, _ = run(FIX / "cloudtrail.json", "cloudtrail")
    zipped, _ = run(gz, "cloudtrail")
    assert [to_dict(e) for e in zipped] == [to_dict(e) for e in plain]
    # A pretty-printed document is one document; JSON Lines are one per line.
    with open_input(FIX / "openai_audit.json") as fh:
        assert len(list(documents(fh, "x"))) == 1
    with open_input(FIX / "bedrock_invocation.jsonl") as fh:
        assert len(list(documents(fh, "x"))) == 5


def test_reingesting_an_export_deduplicates() -> None:
    first, _ = run(FIX / "openai_usage_completions_p1.json", "openai-usage")
    again, _ = run(FIX / "openai_usage_completions_p1.json", "openai-usage")
    assert [e.event_id for e in first] == [e.event_id for e in again]
    out = DetectionCore(detectors=[]).process(first + again)
    assert (len(out.usage), out.duplicates) == (len(first), len(first))


def test_no_raw_secret_reaches_key_id() -> None:
    events, _ = run(FIX / "litellm_spend.json", "litellm")
    assert all(not e.key_id.startswith("sk-") for e in events)
    assert any(e.key_id.startswith("kh_") for e in events)


def test_bedrock_log_joins_cloudtrail_on_request_id() -> None:
    join = RequestJoin(max_wait_s=float("inf"))
    dec = EventDecoder()
    logs, trail = Ingester("bedrock-invocation", dec, join=join), Ingester("cloudtrail", dec, join=join)
    a, _ = run(FIX / "bedrock_invocation.jsonl", "", logs)
    b, _ = run(FIX / "cloudtrail.json", "", trail)
    rest, _ = trail.finish()
    merged = [e for e in a + b if e.request_id == "5d1f2d4e-3c1b-4a49-9a1e-6b7c8d9e0f10"]
    assert len(merged) == 1
    m = merged[0]
    assert (m.source, m.key_id, m.source_ip, m.input_tokens, m.output_tokens) == (
        "invocation_log", "ASIAEXAMPLEKEY000001", "203.0.113.50", 2860, 145)
    assert m.user_agent.startswith("Boto3/") and m.principal.endswith("app-role/i-0abc")
    assert (join.joined, len(rest)) == (1, 3)  # 2 logs + 1 CloudTrail call had no partner: emitted, not lost
    assert {e.source for e in rest} == {"invocation_log", "cloudtrail"}


def test_join_is_bounded_and_time_limited() -> None:
    now = [0.0]
    j = RequestJoin(max_wait_s=10, max_entries=2, clock=lambda: now[0])
    ev = lambda rid, src: {"kind": "usage", "request_id": rid, "source": src, "key_id": "k"}  # noqa: E731
    assert j.add(ev("r1", "invocation_log")) == [] and j.add(ev("r2", "invocation_log")) == []
    assert [e["request_id"] for e in j.add(ev("r3", "cloudtrail"))] == ["r1"]  # capacity: oldest leaves
    now[0] = 11.0
    assert sorted(e["request_id"] for e in j.expire()) == ["r2", "r3"]
    assert len(j) == 0 and j.add({"kind": "audit", "event_id": "x"}) == [{"kind": "audit", "event_id": "x"}]
