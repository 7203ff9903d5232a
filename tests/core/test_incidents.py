"""One incident → one alert, updated only on new evidence; stable ids; expiry."""

from __future__ import annotations

from dataclasses import replace

from keywatch.models.alerts import Finding, IncidentBook, alert_id_for

F = Finding(kind="key_theft", provider="openai", key_id="k1", project="p", ts_ms=10_000, started_at_ms=5_000,
            score=0.5, reasons=["3 requests from 1 new IP"], cost_impact_usd=2.0)


def test_one_alert_per_incident_with_updates_on_new_evidence():
    book = IncidentBook(quiet_ms=60_000)
    first = book.report(F)
    assert first.version == 1 and first.severity == "medium"
    assert first.started_at == "2026-11-25T16:00:00.000Z" or first.started_at_ms == 5_000
    assert book.report(replace(F, ts_ms=11_000)) is None
    assert book.report(replace(F, ts_ms=12_000, cost_impact_usd=2.5)) is None  # small growth: no copy
    up = book.report(replace(F, ts_ms=13_000, score=0.92, reasons=["new country"]))
    assert up.alert_id == first.alert_id and up.version == 2 and up.severity == "critical"
    assert up.detected_at_ms == first.detected_at_ms  # detection time is when it was first raised
    assert "new country" in up.reasons and "3 requests from 1 new IP" in up.reasons


def test_ids_are_deterministic_and_distinct_per_incident():
    a = IncidentBook().report(F)
    b = IncidentBook().report(F)
    c = IncidentBook().report(replace(F, key_id="k2"))
    assert a.alert_id == b.alert_id != c.alert_id
    assert a.alert_id == alert_id_for("key_theft", "openai", "k1", "p", "", 10_000)


def test_quiet_incident_resolves_and_next_finding_opens_a_new_alert():
    book = IncidentBook(quiet_ms=60_000)
    first = book.report(F)
    assert book.expire(F.ts_ms + 30_000) == []
    closed = book.expire(F.ts_ms + 60_000)
    assert [c.status for c in closed] == ["resolved"] and closed[0].alert_id == first.alert_id
    again = book.report(replace(F, ts_ms=F.ts_ms + 120_000))
    assert again.alert_id != first.alert_id and again.version == 1


def test_score_is_clamped_to_unit_interval():
    assert IncidentBook().report(replace(F, score=7.0)).score == 1.0
    assert IncidentBook().report(replace(F, score=-1.0)).score == 0.0


def test_quiet_gap_inside_one_batch_closes_the_incident_in_event_time():
    book = IncidentBook(quiet_ms=60_000)
    first = book.report(F)
    later = book.report(replace(F, ts_ms=F.ts_ms + 90_000))  # no expire() call in between
    assert later.alert_id != first.alert_id
    closed = book.expire(F.ts_ms + 90_000)
    assert [(c.alert_id, c.status, c.updated_at_ms) for c in closed] == [(first.alert_id, "resolved", F.ts_ms + 60_000)]


def test_book_pickles_and_old_snapshots_load():
    import pickle

    book = IncidentBook()
    book.report(F)
    state = book.__dict__.copy()
    del state["closed"]
    old = IncidentBook.__new__(IncidentBook)
    old.__setstate__(state)
    assert old.expire(F.ts_ms) == [] and pickle.loads(pickle.dumps(book)).is_open("key_theft", "openai", "k1", "p")
