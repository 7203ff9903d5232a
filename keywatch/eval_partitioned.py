"""A time-ordered events file through the streaming worker's detection layout, without Kafka.

`keywatch replay` runs one core over every key. The worker runs one partition core per input
partition (per-key detectors; `PartitionCores`, whose cores share key theft's cross-key state)
and a worker-wide core (project level) that takes the partition cores' output in event-time
order (stream/globalcore.py `process_global`). `keywatch eval scenarios --partitions N` scores
this layout: events placed as the producer places them (stream/produce.py `Placement`,
`partition_of`), each partition in the file's order, batches of `batch_events` events of the
whole stream. It found that the worker detected 10/12 `new_key_abuse` and 9/12 `hard_new_key`
cases with 5.5 false high/critical alerts per 1,000 key-days while each partition core kept its
own cross-key state, where replay detects all with none; and the same of four workers (`--workers
4`) while each kept its own project populations, before they shared them (models/keytheft_share.py).
"""

from __future__ import annotations

from pathlib import Path

from keywatch.models.keytheft_share import PopulationShare
from keywatch.models.registry import build_core
from keywatch.stream.decode import EventDecoder
from keywatch.stream.globalcore import process_global
from keywatch.stream.partitions import PartitionCores
from keywatch.stream.produce import Placement, partition_of


def alerts_of_layout(path: Path, settings, partitions: int, *, workers: int = 1,
                     batch_events: int = 5000, share: bool | None = None) -> tuple[list[dict], int]:
    """(alerts as the contract's JSON, latest version of each id in first-raised order; events).
    `workers` > 1: `all` workers in one group, partition p on worker p mod `workers`, each with
    its own partition cores (so its own cross-key key-theft state) and worker-wide core.
    Events go where `settings.placement` sends them (`key`, or `project`: whole projects per worker).
    `share` (default: `KEYWATCH_POPULATION_SHARE_S` > 0): the workers share key theft's project
    populations after every batch, as they do over the populations topic (stream/popshare.py)."""
    decoder = EventDecoder.from_settings(settings, streaming=False)
    placement = Placement.from_settings(settings)  # as the producer (`KEYWATCH_PLACEMENT`), learning in file order
    groups = [PartitionCores(lambda: build_core(settings, "partition")) for _ in range(workers)]
    globals_ = [build_core(settings, "global") for _ in range(workers)]
    alerts: dict[str, dict] = {}
    n = 0
    share = settings.population_share_s > 0 if share is None else share
    shares = [PopulationShare(str(w)) for w in range(workers)] if share and workers > 1 else []

    def pops(w: int) -> dict:
        kt = groups[w].shared_key_theft
        return kt.pops if kt is not None else {}

    def run(batch: list) -> None:
        per_worker: dict[int, dict[int, tuple[list, dict]]] = {w: {} for w in range(workers)}
        for e in batch:
            key = placement.key(e.key_id, e.project, e.source, e.principal, e.provider)
            p = partition_of(key, partitions)
            per_worker[p % workers].setdefault(p, ([], {}))[0].append(e)
        for w, per_part in per_worker.items():
            outs = [groups[w].core_for(p).process(evs, rows=False) for p, (evs, _) in sorted(per_part.items())]
            # a fixed clock: no partition idles, so each worker-wide core follows event time alone
            out = process_global(globals_[w], outs, per_part, set(), now=0.0 if batch else 1e12,
                                 idle_s=settings.global_order_idle_s)
            for a in [a for o in outs for a in o.alerts] + out.alerts:
                alerts[a.alert_id] = a.to_contract()
        if shares:  # after each batch, as the workers' populations topic every few seconds
            sent = [(w, shares[w].collect(pops(w))) for w in range(workers)]
            for w, deltas in sent:
                for v in range(workers):
                    if v != w and groups[v].shared_key_theft is not None:
                        for d in deltas:
                            shares[v].merge(pops(v), d)

    batch: list = []
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            batch += decoder.decode(line)[0]  # dead letters: none in a simulated file
            if len(batch) >= batch_events:
                n += len(batch)
                run(batch)
                batch = []
    n += len(batch)
    run(batch)
    run([])  # the end of the stream: the worker-wide core's waiting events go
    return list(alerts.values()), n
