"""Renders docs/configuration.md from the Settings class, so the page cannot drift from the code."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic_core import PydanticUndefined

from service.settings import Settings

HEADER = """# Configuration

One settings class (`service/settings.py`, pydantic-settings) reads every `HERPSCORE_*`
environment variable; a bad value stops the CLI with a message naming the field. Lists are
comma separated. This page is generated from that class (`python -m service.configdoc >
docs/configuration.md`) and a test keeps it current.

| variable | default | meaning |
|---|---|---|
"""


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None or value == [] or value == "":
        return "none"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return json.dumps(value)
    return str(value)


def render_configuration() -> str:
    """The markdown page: one row per setting, in the class's order."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    rows = []
    for name, field in Settings.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{prefix}{name.upper()}` | `{_default(field)}` | {meaning} |")
    return HEADER + "\n".join(rows) + "\n"


def main() -> None:
    """Print the page, or write it to the path given as the only argument."""
    text = render_configuration()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
