"""The README documents every setting and the two set-up commands (it is the operator's manual)."""

from __future__ import annotations

from pathlib import Path

from keywatch.settings import ENV_PREFIX, Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_documented():
    missing = [ENV_PREFIX + n.upper() for n in Settings.model_fields if f"`{ENV_PREFIX}{n.upper()}`" not in README]
    assert missing == [], f"run `keywatch settings --markdown` and update the README: {missing}"


def test_every_setting_has_a_description():
    assert [n for n, f in Settings.model_fields.items() if not f.description] == []


def test_quick_start_commands_are_there():
    assert "make demo" in README and "make test" in README
    assert "make test" in (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
