"""Property-based: no input crashes a normaliser; bad input is always a typed rejection."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from keywatch.stream.connectors.common import Rejected
from keywatch.stream.connectors.ingest import FORMATS, Ingester
from keywatch.stream.decode import EventDecoder

FIX = Path(__file__).parent / "fixtures"
NORMALISERS = {k: v for k, v in FORMATS.items() if v is not None}
SAMPLES = {  # one realistic document per format, to mutate
    "openai-usage": "openai_usage_completions_p1.json", "openai-costs": "openai_costs.json",
    "openai-audit": "openai_audit.json", "anthropic-usage": "anthropic_usage.json",
    "anthropic-cost": "anthropic_cost.json", "cloudtrail": "cloudtrail.json", "litellm": "litellm_spend.json",
    "otlp": "otlp_traces.json", "bedrock-invocation": "bedrock_invocation.jsonl",
}

scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=30)
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=5),
                           max_leaves=25)


def _sample(fmt: str):
    text = (FIX / SAMPLES[fmt]).read_text()
    return json.loads(text.splitlines()[0]) if fmt == "bedrock-invocation" else json.loads(text)


def _paths(doc, prefix=()):
    """Every (path) to a value inside a document, for targeted mutation."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


def _replace(doc, path, value):
    if not path:
        return value
    out = dict(doc) if isinstance(doc, dict) else list(doc)
    out[path[0]] = _replace(doc[path[0]], path[1:], value)
    return out


def _check(fmt: str, doc) -> None:
    outs = list(NORMALISERS[fmt](doc))
    for o in outs:
        assert isinstance(o, (dict, Rejected))
        if isinstance(o, Rejected):
            assert o.reason.startswith("normalise:") and o.reason != "normalise:unexpected", o
    # Whatever the normaliser emits, the decoder accepts or dead-letters; nothing raises.
    Ingester(fmt, EventDecoder()).feed_document(doc, "prop", 1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(sorted(NORMALISERS)), doc=json_values)
def test_arbitrary_json_never_crashes(fmt, doc) -> None:
    _check(fmt, doc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(sorted(SAMPLES)), data=st.data(), value=json_values)
def test_mutated_real_documents_never_crash(fmt, data, value) -> None:
    doc = _sample(fmt)
    path = data.draw(st.sampled_from(list(_paths(doc))))
    _check(fmt, _replace(doc, path, value))
