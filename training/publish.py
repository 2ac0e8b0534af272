"""Publishing a trained model folder to the registry as a candidate ModelVersion."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def publish(folder: Path, name: str, source: str, metrics: dict[str, Any]) -> int:
    """Register `folder` as a candidate (never active) model version; returns its id."""
    from service.db import session_scope
    from service.registry import add_model
    from service.settings import get_settings

    settings = get_settings()
    with session_scope(settings.db_url) as session:
        version = add_model(
            session, settings, folder, name=name, activate=False, source=source, metrics=metrics
        )
        return int(version.id)
