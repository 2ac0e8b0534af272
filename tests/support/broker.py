"""Brokers for tests: what the embedded broker holds, and a broker that is down."""

from __future__ import annotations

import base64
import json
from typing import Any

from service.settings import Settings

# Nothing listens on port 1: a Redis broker there refuses every connection at once.
UNREACHABLE_BROKER = "redis://127.0.0.1:1/0"


def queued_messages(settings: Settings) -> list[tuple[str, list[Any]]]:
    """(task name, args) of every message waiting in the embedded (filesystem) broker."""
    assert settings.is_embedded_broker, "only the filesystem broker can be read back"
    folder = settings.broker_folder / "in"
    found = []
    for path in sorted(folder.glob("*.msg")) if folder.is_dir() else []:
        message = json.loads(path.read_text(encoding="utf-8"))
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        found.append((message["headers"]["task"], args))
    return found
