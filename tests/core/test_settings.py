from __future__ import annotations

import pytest

from keywatch.settings import Settings, SettingsError


def test_defaults_are_the_embedded_stack(tmp_path):
    s = Settings.from_env({"KEYWATCH_DATA_DIR": str(tmp_path)})
    assert s.embedded_kafka and s.embedded_clickhouse
    assert (s.input_topic, s.dlq_topic) == ("keywatch.events", "keywatch.dlq")


def test_settings_are_frozen(tmp_path):
    s = Settings.from_env({"KEYWATCH_DATA_DIR": str(tmp_path)})
    with pytest.raises(Exception):
        s.topic_partitions = 9


@pytest.mark.parametrize("name, value", [
    ("KEYWATCH_TOPIC_PARTITIONS", "many"), ("KEYWATCH_BATCH_MAX_SECONDS", "0"),
    ("KEYWATCH_LOG_LEVEL", "LOUD"), ("KEYWATCH_CLICKHOUSE_DATABASE", "drop table;"),
])
def test_invalid_setting_names_the_setting(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_secrets_are_redacted_in_errors_and_repr(tmp_path):
    s = Settings.from_env({"KEYWATCH_CLICKHOUSE_DSN": "clickhouse://u:hunter2@db:8123/x", "KEYWATCH_DATA_DIR": str(tmp_path)})
    assert "hunter2" not in repr(s) and s.secret("clickhouse_dsn").endswith("/x")


def test_secret_from_file(tmp_path):
    f = tmp_path / "token"
    f.write_text("s3cret-token\n")
    s = Settings.from_env({"KEYWATCH_API_TOKEN_FILE": str(f)})
    assert s.secret("api_token") == "s3cret-token"
    with pytest.raises(SettingsError, match="KEYWATCH_API_TOKEN_FILE"):
        Settings.from_env({"KEYWATCH_API_TOKEN_FILE": str(tmp_path / "missing")})


def test_dotenv_file_is_read(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("KEYWATCH_TOPIC_PARTITIONS=7\n")
    monkeypatch.chdir(tmp_path)
    for k in list(__import__("os").environ):
        if k.startswith("KEYWATCH_"):
            monkeypatch.delenv(k)
    assert Settings.from_env().topic_partitions == 7
