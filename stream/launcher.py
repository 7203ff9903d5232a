"""`keywatch worker --processes N [--split-tiers]`: several worker processes on one machine.

One worker process runs its Python on one core at a time (the interpreter lock), so on a
machine with more cores throughput scales by running more workers in one consumer group: Kafka
spreads the partitions over them, and each partition's per-key state moves with it. This starts
them as child processes and supervises them:

* Kafka: the configured brokers, or one embedded broker started here and shared.
* ClickHouse: the configured server, or — embedded chDB allows one process per data path —
  `keywatch db serve` on the embedded path (KEYWATCH_DATA_DIR/chdb), on a free local port, that
  every worker uses as an ordinary ClickHouse server (sinks/chserver.py).
* Workers: ``w0 … w{N-1}``, each with its own data directory (KEYWATCH_DATA_DIR/workers/<name>:
  status file, faust state), a stable `KEYWATCH_WORKER_INSTANCE` (its own project-level
  snapshot) and HTTP port KEYWATCH_WEB_PORT + i (none when it is 0).
* ``--split-tiers``: the N workers are of tier ``keys`` and one more, ``projects``, runs the
  project-level detectors over every partition (`KEYWATCH_WORKER_TIER`), so project-level
  detection is exact instead of judged per worker share (docs/operations.md).

If a child exits, the others are stopped and the launcher exits with its code (128 + N when a
signal N killed it; 1 when it exited with 0), so that the supervisor
above — systemd, Kubernetes — restarts the group; commit-after-write makes that safe. SIGTERM
or SIGINT stop the workers first (each takes its final snapshot), then `db serve`, then the broker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from keywatch.procs import die_with_parent, stop_process
from keywatch.settings import Settings

log = logging.getLogger("keywatch.launcher")


def worker_envs(settings: Settings, processes: int, split_tiers: bool) -> dict[str, dict[str, str]]:
    """Each child's name → its environment overrides (on top of the launcher's environment).

    >>> envs = worker_envs(Settings(web_port=7000), 2, True)
    >>> [(n, e["KEYWATCH_WORKER_TIER"], e["KEYWATCH_WEB_PORT"]) for n, e in envs.items()]
    [('w0', 'keys', '7000'), ('w1', 'keys', '7001'), ('projects', 'projects', '7002')]
    """
    if processes < 1:
        raise ValueError("--processes must be at least 1")
    names = [(f"w{i}", "keys" if split_tiers else "all") for i in range(processes)]
    if split_tiers:
        names.append(("projects", "projects"))
    out = {}
    for i, (name, tier) in enumerate(names):
        port = settings.web_port + i if settings.web_port else 0
        out[name] = {"KEYWATCH_DATA_DIR": str(settings.data_dir / "workers" / name), "KEYWATCH_WORKER_TIER": tier,
                     "KEYWATCH_WORKER_INSTANCE": name if tier != "projects" else "", "KEYWATCH_WEB_PORT": str(port)}
    return out


def status_files(data_dir: Path) -> dict[str, Path]:
    """The children's status files, by name (what the bench and the tests read)."""
    root = Path(data_dir) / "workers"
    return {p.parent.name: p for p in sorted(root.glob("*/worker.status.json"))}


def placement_warning(settings: Settings, processes: int) -> str | None:
    """What to tell an operator who runs more than two key-level workers on keys placed one by
    one with population sharing off (`KEYWATCH_POPULATION_SHARE_S=0`): each worker then keeps
    its own project populations, so a new key meets only its worker's share of its project.

    >>> placement_warning(Settings(), 4) is None  # sharing on (the default)
    True
    >>> off = Settings(population_share_s=0)
    >>> placement_warning(off, 2) is None, placement_warning(off.model_copy(update={"placement": "project"}), 4) is None
    (True, True)
    >>> placement_warning(off, 4).split(":")[0]
    '4 workers share key-level detection, KEYWATCH_PLACEMENT is key and KEYWATCH_POPULATION_SHARE_S is 0'
    """
    if processes <= 2 or settings.placement != "key" or settings.population_share_s > 0:
        return None
    return (f"{processes} workers share key-level detection, KEYWATCH_PLACEMENT is key and "
            "KEYWATCH_POPULATION_SHARE_S is 0: each keeps its own project populations, so key theft "
            "on new keys is less accurate than with two (10/12 new-key abuse cases caught with four, "
            "in the scenario suite). Share populations (KEYWATCH_POPULATION_SHARE_S > 0), or place "
            "by project (KEYWATCH_PLACEMENT=project), to keep it exact.")


def run_group(settings: Settings, bootstrap: str | None, processes: int, split_tiers: bool,
              loglevel: str | None = None) -> int:
    """Start the children, wait until one exits or a stop signal arrives; the exit code."""
    from keywatch.sinks.chserver import ServerProcess
    from keywatch.stream.broker import ensure_topics, kafka_bootstrap, topic_specs

    envs = worker_envs(settings, processes, split_tiers)
    warning = placement_warning(settings, processes)
    if warning:
        log.warning(warning)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    children: dict[str, subprocess.Popen] = {}
    code = 0
    try:
        with contextlib.ExitStack() as stack:
            bs = bootstrap or stack.enter_context(
                kafka_bootstrap(settings, create_topics=False, log_file=settings.data_dir / "broker.log"))
            ensure_topics(bs, topic_specs(settings))
            base = {**os.environ, "KEYWATCH_KAFKA_BOOTSTRAP": bs}
            if bootstrap is None and settings.kafka_rebalance_timeout_s is None:
                # The embedded broker holds a group join for half the session timeout: with faust's
                # defaults the workers would wait ≈ 30 s before their first batch (as `keywatch demo`).
                base["KEYWATCH_KAFKA_REBALANCE_TIMEOUT_S"] = "1.5"
            if settings.embedded_clickhouse:
                srv = stack.enter_context(ServerProcess(settings.data_dir / "chdb", env=base,
                                                        log_file=settings.data_dir / "db-serve.log"))
                base["KEYWATCH_CLICKHOUSE_DSN"] = _dsn(settings, srv.dsn)
            cmd = [sys.executable, "-m", "keywatch.cli", "worker"] + (["--loglevel", loglevel] if loglevel else [])
            for name, env in envs.items():
                Path(env["KEYWATCH_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
                with open(Path(env["KEYWATCH_DATA_DIR"]) / "worker.log", "ab") as out:
                    # Own session: a terminal's Ctrl-C reaches the launcher only, which stops the
                    # workers before `db serve` (their final snapshots need it); and they get SIGTERM
                    # if the launcher itself is killed.
                    children[name] = subprocess.Popen(cmd, env={**base, **env}, stdout=out, stderr=subprocess.STDOUT,
                                                      start_new_session=True, preexec_fn=die_with_parent())
                log.info("started worker %s (tier %s, pid %d)", name, env["KEYWATCH_WORKER_TIER"], children[name].pid)
            while not stop.wait(0.2):
                done = next(((n, p.returncode) for n, p in children.items() if p.poll() is not None), None)
                if done:
                    log.error("worker %s exited with %s: stopping the others", *done)
                    code = 128 - done[1] if done[1] < 0 else done[1] or 1  # killed by signal N: 128 + N, as a shell says
                    break
            for proc in children.values():  # SIGTERM to all first: they shut down in parallel
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in children.values():
                stop_process(proc, grace=120)
    finally:
        for proc in children.values():
            if proc.poll() is None:
                proc.kill()
        for s, h in old.items():
            signal.signal(s, h)
    return code


def _dsn(settings: Settings, dsn: str) -> str:
    """`db serve`'s address, with the credentials it requires when a password is set."""
    pw = settings.secret("chserver_password")
    if not pw:
        return dsn
    from urllib.parse import quote

    return dsn.replace("http://", f"http://{quote(settings.chserver_user, safe='')}:{quote(pw, safe='')}@", 1)
