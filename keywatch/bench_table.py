"""`keywatch bench`'s table: each figure of keywatch/bench.py's result, with its baseline beside it."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _span(fig: dict) -> str:
    lo, hi = fig["range"]
    return f"{lo / 1000:,.1f}–{hi / 1000:,.1f}k ev/s"


def _broker(fig: dict) -> str:
    x = fig.get("broker_cpu_us_per_event")
    return f" + {x:,.1f} in the broker" if x is not None else ""


def _dedupe(r: dict, keys: int | None) -> str:
    """The bounded dedupe window's part of a memory figure (per key when `keys` is given)."""
    mb = r.get("dedupe_window_mb")
    if not mb:
        return ""
    return (f"; the dedupe window's {mb:,.0f} MB too" if keys is None else
            f"; of it the dedupe window's {mb:,.0f} MB, bounded: {mb * 2**20 / keys:,.0f} B per key here")


def _untrimmed(r: dict) -> str:
    b = r.get("untrimmed_bytes_per_key")
    return f"; before freed heap memory went back to the OS: {b:,.0f} B" if b else ""


def print_table(r: dict, console: Console) -> None:
    from keywatch.bench import LIVE_RATE  # here: keywatch/bench.py imports this module

    t = Table(title=f"keywatch bench — {r['partitions']} partitions, {r['cpus']} CPUs, {r['seconds']:.0f} s")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("detail")
    wb, ws, b, lat, c = r["worker_batched"], r["worker_single"], r["baseline"], r["latency"], r["core"]
    t.add_row("worker, 100 events/message", f"{wb['events_per_s']:,.0f} ev/s", f"{wb['events']:,} events, {wb['alerts']} alerts")
    wl = r["worker_live"]
    t.add_row("worker, 100 events/message, live event time", f"{wl['events_per_s']:,.0f} ev/s",
              f"event time at {LIVE_RATE:,.0f} events/s (above: days of backlog); {r['ratio_live']:.2f}× baseline, "
              f"{wl.get('cpu_us_per_event', 0):,.1f} µs CPU/event{_broker(wl)}; median of {wl['runs']} runs, {_span(wl)}; "
              f"first run ÷ first baseline run {r['ratio_live_first_runs']:.2f}×")
    for k, label in (("group", "2 workers, one group"), ("tiers", "2 keys workers + 1 projects worker")):
        w = r[f"worker_{k}"]
        t.add_row(f"{label}, live event time", f"{w['events_per_s']:,.0f} ev/s",
                  f"{r[f'ratio_{k}']:.2f}× baseline; {w['cpu_us_per_event']:,.1f} µs CPU/event in workers"
                  + (f" + {w['db_serve_cpu_us_per_event']:,.1f} in db serve" if w.get("db_serve_cpu_us_per_event") else "")
                  + _broker(w)
                  + ("; project level per worker share" if k == "group" else "; project level exact"))
    t.add_row("worker, 1 event/message", f"{ws['events_per_s']:,.0f} ev/s", f"{ws['events']:,} events")
    t.add_row("baseline (raw consume+insert)", f"{b['events_per_s']:,.0f} ev/s",
              f"{b['events']:,} events; median of {b['runs']} runs, {_span(b)}")
    t.add_row("[bold]ratio worker/baseline[/bold]", f"[bold]{r['ratio']:.2f}×[/bold]", f"1 event/message: {r['ratio_single']:.2f}×")
    if "cpu_us_per_event" in wb and "cpu_us_per_event" in b:
        t.add_row("CPU per event, worker", f"{wb['cpu_us_per_event']:,.0f} µs",
                  f"{wb['cores']:.2f} cores busy{_broker(wb)}; 1 event/message: {ws.get('cpu_us_per_event', 0):,.0f} µs"
                  + _broker(ws))
        t.add_row("CPU per event, baseline", f"{b['cpu_us_per_event']:,.1f} µs", f"{b['cores']:.2f} cores busy{_broker(b)}")
    fmt = lambda x: f"{x:.2f} s" if x is not None else "–"  # noqa: E731
    t.add_row("event→alert p50", fmt(lat["p50_s"]), f"{lat['alerts']} alerts at {lat['rate_achieved']:,.0f} ev/s")
    t.add_row("event→alert p99", fmt(lat["p99_s"]), f"target {lat['rate_target']:,.0f} ev/s")
    t.add_row("state per tracked key (pickled)", f"{c['bytes_per_key']:,.0f} B", f"{c['state_keys']:,} keys")
    if c.get("resident_bytes_per_key"):
        t.add_row("resident memory per tracked key", f"{c['resident_bytes_per_key']:,.0f} B",
                  f"{c['resident_mb']:,.0f} MB for {c['state_keys']:,} keys in a fresh process (pickled above; "
                  "caches of distinct callers included" + _dedupe(c, None) + ")" + _untrimmed(c))
    if (bz := c.get("busy", {})).get("resident_bytes_per_key"):
        t.add_row("… busy keys", f"{bz['resident_bytes_per_key']:,.0f} B",
                  f"{bz['keys']:,} keys in {bz.get('projects', 50)} projects, a call a minute each for {bz['minutes']} minutes" + _untrimmed(bz))
    if (so := bz.get("solo", {})).get("resident_bytes_per_key"):
        t.add_row("… busy keys, one per project", f"{so['resident_bytes_per_key']:,.0f} B",
                  f"the same {so['keys']:,} keys, each alone in its project: a key carries its project's state" + _untrimmed(so))
    if (wz := c.get("window", {})).get("alternating_exact"):
        alt, ex = wz["alternating"], wz["alternating_exact"]
        t.add_row("… a project's spend series, window maxima", f"{alt['3.5 days']['pool_kb']:,.1f} KB",
                  f"at 3.5 days of two values in turn, in blocks of {wz['block']} rows; a row each (exact, until session 28): "
                  f"{ex['3.5 days']['pool_kb']:,.1f} KB ({ex['2.5 hours']['pool_kb']:,.1f} KB at 2.5 hours, as in the row above); "
                  f"noisy daily cycle {wz['noisy']['3.5 days']['pool_kb']:,.1f} KB (exact {wz['noisy_exact']['3.5 days']['pool_kb']:,.1f}); "
                  f"at most {wz['worst_case_pool_kb']:,.0f} KB (exact {wz['exact_worst_case_pool_kb']:,.0f}; keywatch/bench_window.py)")
    if (iz := c.get("idle", {})).get("resident_bytes_per_key"):
        t.add_row("… mostly idle keys", f"{iz['resident_bytes_per_key']:,.0f} B", f"{iz['keys']:,} keys in {iz['waves']} waves 70 minutes "
                  f"apart, all but the last wave idle (packed, {iz.get('spilled_bytes_per_key', 0):,.0f} B a key on disk); "
                  f"packed in memory: {iz.get('in_memory', {}).get('resident_bytes_per_key', 0):,.0f} B; "
                  f"unpacked: {iz['unpacked']['resident_bytes_per_key']:,.0f} B" + _untrimmed(iz))
    if (gz := c.get("gateway", {})).get("resident_bytes_per_key"):
        t.add_row("… gateway-fronted keys", f"{gz['resident_bytes_per_key']:,.0f} B",
                  f"{gz['keys']:,} keys seen every hour for {gz['hours']} hours by the gateway and the provider"
                  + _dedupe(gz, gz["keys"]) + _untrimmed(gz))
    if (sp := c.get("spill", {})).get("stepped"):
        st, once = sp["stepped"], sp["all_at_once"]
        t.add_row("spill file compaction: longest pause", f"{st['longest_compacting_ms']:,.1f} ms",
                  f"{sp['values']:,} idle keys' state of {sp['value_bytes']} B, {sp['step']} values moved per change; "
                  f"all at once: {once['longest_compacting_ms']:,.0f} ms; any change: {st['longest_ms']:,.1f} ms "
                  f"(all at once {once['longest_ms']:,.0f}); {st['us_per_change']:.1f} µs a change "
                  f"(all at once {once['us_per_change']:.1f})")
    t.add_row("peak RSS (state build)", f"{c['peak_rss_mb']:,.0f} MB", f"{c['state_keys']:,} keys")
    snap = c.get("snapshot", {})
    if "forked_wait_s" in snap:
        t.add_row("snapshot: detection waits", f"{snap['forked_wait_s']:.3f} s",
                  f"forked (child {snap['forked_child_s']:.2f} s); in process {snap['in_process_wait_s']:.2f} s; {c['state_keys']:,} keys")
    t.add_row("replay (default core)", f"{c['replay_events_per_s']:,.0f} ev/s",
              f"{c['replay_events']:,} events, best of {c['replay_repeat']}"
              + (", detectors split with the reader process" if c.get("replay_split") else ", reader process" if c.get("replay_reader_process") else "")
              + (f"; not split {c['replay_not_split_events_per_s']:,.0f} ev/s" if "replay_not_split_events_per_s" in c else "")
              + f"; decoded inline {c['replay_inline_events_per_s']:,.0f} ev/s; decode alone {c['replay_decode_only_events_per_s']:,.0f} ev/s")
    console.print(t)
