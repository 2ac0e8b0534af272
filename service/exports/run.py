"""Running a queued export: snapshot the labels, write the folder, record the outcome."""

from __future__ import annotations

from service.exports.candidates import collect_candidates
from service.exports.folder import write_export
from service.exports.options import ExportOptions
from service.exports.records import get_export
from service.exports.test_set import frozen_test_set
from service.models import DatasetExport, ExportStatus, utcnow
from service.settings import Settings


def run_export(settings: Settings, export_id: int) -> DatasetExport:
    """Build a queued (or interrupted) export's folder and record the result; idempotent."""
    from service.db import session_scope

    with session_scope(settings.db_url) as session:
        export = get_export(session, export_id)
        if export.status == ExportStatus.DONE:
            return export
        export.status = ExportStatus.RUNNING
        export.error = None
        options = ExportOptions.from_dict(export.options)
        snapshot_at = utcnow()
        candidates, excluded, ruled_out = collect_candidates(session, options)
        test_set = frozen_test_set(session, settings)
    try:
        path, card = write_export(
            settings, export_id, options, candidates, excluded, ruled_out, snapshot_at,
            set(test_set.sha256) if test_set else set(),
        )  # fmt: skip
    except Exception as exc:
        with session_scope(settings.db_url) as session:
            export = get_export(session, export_id)
            export.status, export.error = ExportStatus.FAILED, str(exc)[:2000]
            export.finished_at = utcnow()
        raise
    with session_scope(settings.db_url) as session:
        export = get_export(session, export_id)
        export.status, export.path = ExportStatus.DONE, str(path)
        export.counts = {
            "total": card["total"],
            "splits": card["splits"],
            "classes": card["classes"],
            "sources": card["sources"],
            "split_mode": card["split_mode"],
            "snapshot_at": card["snapshot_at"],
            # What was left out and why, so an empty or small export can say so.
            "dropped_classes": card["dropped_classes"],
            "unsafe_labels": card["unsafe_labels"],
            "excluded": card["excluded"],
        }
        export.finished_at = utcnow()
        return export
