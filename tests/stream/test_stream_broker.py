"""The embedded broker: binary verification, start/stop without orphans, idempotent topics."""

from __future__ import annotations

import os
import shutil
import stat

import pytest

from keywatch.settings import Settings
from keywatch.stream.broker import (EXPECTED_SHA256, BrokerError, EmbeddedBroker, ensure_topics, sha256_file,
                                    topic_specs, verified_binary)


def test_pinned_binary_matches_the_vetted_hash():
    assert sha256_file(verified_binary()) == EXPECTED_SHA256


def test_tampered_binary_is_refused_and_never_run(tmp_path):
    fake = tmp_path / "tansu"
    marker = tmp_path / "ran"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nsleep 30\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(BrokerError, match="sha256"):
        EmbeddedBroker(binary=fake).start()
    assert not marker.exists()


def test_one_flipped_byte_is_a_mismatch(tmp_path):
    copy = tmp_path / "tansu"
    shutil.copyfile(verified_binary(), copy)
    with open(copy, "r+b") as fh:
        fh.seek(1000)
        b = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([b[0] ^ 1]))
    with pytest.raises(BrokerError, match="does not match"):
        verified_binary(copy)


def test_start_create_topics_and_stop_leaves_no_process():
    s = Settings.from_env({"KEYWATCH_TOPIC_PARTITIONS": "3"})
    with EmbeddedBroker() as b:
        pid = b.proc.pid
        specs = [(f"unit.{n}", p) for n, p in topic_specs(s)]
        assert sorted(ensure_topics(b.bootstrap, specs)) == sorted(n for n, _ in specs)
        assert ensure_topics(b.bootstrap, specs) == []  # idempotent
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        try:
            parts = {t.get("topic", t.get("name")): len(t["partitions"]) for t in admin.describe_topics([n for n, _ in specs])}
        finally:
            admin.close()
        assert parts["unit.keywatch.events"] == 3 and parts["unit.keywatch.dlq"] == 1
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
