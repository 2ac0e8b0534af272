"""Export rows: record, queue, read and list exports, their JSON shape and where they live."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import get_or_not_found, newest_first
from service.exports.options import ExportOptions
from service.models import DatasetExport, ExportStatus
from service.settings import Settings


def create_export(session: Session, options: ExportOptions, created_by: str = "") -> DatasetExport:
    """Record a queued export; send it with `tasks_client.enqueue` after the commit."""
    export = DatasetExport(
        status=ExportStatus.QUEUED, options=asdict(options), created_by=created_by
    )
    session.add(export)
    session.flush()
    return export


def get_export(session: Session, export_id: int) -> DatasetExport:
    export = get_or_not_found(session, DatasetExport, export_id, "export")
    return export


def list_exports(
    session: Session, limit: int = 100, offset: int = 0
) -> tuple[list[DatasetExport], int]:
    return newest_first(session, select(DatasetExport), DatasetExport.id, limit, offset)


def export_to_dict(export: DatasetExport) -> dict[str, Any]:
    """The public JSON shape of an export (its folder name, not the server path)."""
    return {
        "id": export.id,
        "status": export.status.value,
        "folder": Path(export.path).name if export.path else None,
        "options": export.options,
        "counts": export.counts,
        "error": export.error,
        "created_by": export.created_by,
        "created_at": export.created_at.isoformat(),
        "finished_at": export.finished_at.isoformat() if export.finished_at else None,
    }


def exports_root(settings: Settings) -> Path:
    return settings.data_path / "exports"
