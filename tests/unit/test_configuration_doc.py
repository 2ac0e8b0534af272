"""docs/configuration.md is generated from Settings: every setting has a row and a meaning."""

from __future__ import annotations

from pathlib import Path

from service.configdoc import render_configuration
from service.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_has_a_description() -> None:
    missing = [name for name, field in Settings.model_fields.items() if not field.description]
    assert missing == []


def test_configuration_page_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render_configuration(), (
        "docs/configuration.md is stale: run `python -m service.configdoc docs/configuration.md`"
    )


def test_every_setting_is_on_the_page() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"`HERPSCORE_{name.upper()}`" in text
