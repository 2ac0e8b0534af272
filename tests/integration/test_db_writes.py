"""insert_ignoring_conflicts: the bulk write under the scan and the scoring path (both databases).

On PostgreSQL it is one INSERT ... SELECT FROM json_populate_recordset(one JSON text) that
bypasses SQLAlchemy's per-row processing, so these check what that processing would have
done: types (JSON, enums, timezone-aware datetimes), NULLs, Python-side defaults, and
skipped conflicts.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service.db import insert_ignoring_conflicts, session_scope
from service.models import (
    Image,
    JobImage,
    JobImageStatus,
    JobStatus,
    ModelVersion,
    Prediction,
    ReviewItem,
    ReviewStatus,
    ScanJob,
)


def _parents(url: str) -> tuple[int, int]:
    """A model version and a job to hang predictions on; returns their ids."""
    with session_scope(url) as session:
        model = ModelVersion(
            name="m", path="/models/m1", num_classes=2, class_map={"0": "a", "1": "b"},
            meta={}, files_sha256={},
        )  # fmt: skip
        session.add(model)
        session.flush()
        job = ScanJob(
            folder="/photos", extensions=["jpg"], model_version_id=model.id, threshold=0.5
        )
        session.add(job)
        session.flush()
        return model.id, job.id


def test_rows_round_trip_with_nulls_and_defaults_and_conflicts_are_skipped(db_url):
    taken = datetime(2026, 5, 1, 8, 30, tzinfo=timezone(timedelta(hours=8)))  # UTC+8
    rows = [
        {"path": "/p/a b (1).jpg", "sha256": "a" * 64, "size_bytes": 5_000_000_000,
         "mtime": 1.5, "width": 4000, "height": 3000, "format": "JPEG",
         "captured_at": taken, "gps_lat": 14.5, "gps_lon": 121.0},
        {"path": "/p/é.jpg", "sha256": None, "size_bytes": None, "mtime": None,
         "width": None, "height": None, "format": None, "captured_at": None,
         "gps_lat": None, "gps_lon": None},
    ]  # fmt: skip
    with session_scope(db_url) as session:
        insert_ignoring_conflicts(session, Image, rows, ["path", "sha256"])
        # The same first row again (a rescan) adds nothing and raises nothing.
        insert_ignoring_conflicts(session, Image, rows[:1], ["path", "sha256"])
    with session_scope(db_url) as session:
        images = session.scalars(select(Image).order_by(Image.id)).all()
        assert [i.path for i in images] == ["/p/a b (1).jpg", "/p/é.jpg"]
        first, second = images
        assert first.size_bytes == 5_000_000_000 and first.format == "JPEG"
        assert first.captured_at == taken and first.captured_at.tzinfo is not None
        assert first.captured_at.astimezone(UTC).hour == 0  # stored as the same instant
        assert (second.sha256, second.width, second.captured_at) == (None, None, None)
        # created_at was left out of the rows: its Python-side default filled it in.
        assert all(abs((datetime.now(UTC) - i.created_at).total_seconds()) < 60 for i in images)
        image_ids = [i.id for i in images]

    model_id, job_id = _parents(db_url)
    topk = [["a", 0.7], ["b", 0.3]]
    with session_scope(db_url) as session:
        insert_ignoring_conflicts(
            session,
            JobImage,
            [{"job_id": job_id, "image_id": i, "rel_path": f"x{i}",
              "status": JobImageStatus.PENDING} for i in image_ids],
            ["job_id", "image_id"],
        )  # fmt: skip
        insert_ignoring_conflicts(
            session,
            Prediction,
            [{"image_id": i, "model_version_id": model_id, "job_id": job_id, "label": "a",
              "label_index": 0, "confidence": 0.7, "topk": topk} for i in image_ids],
            ["image_id", "model_version_id"],
        )  # fmt: skip
    with session_scope(db_url) as session:
        statuses = session.scalars(select(JobImage.status)).all()
        assert statuses == [JobImageStatus.PENDING, JobImageStatus.PENDING]
        predictions = session.scalars(select(Prediction).order_by(Prediction.id)).all()
        assert [p.topk for p in predictions] == [topk, topk]  # JSON, not a text array
        insert_ignoring_conflicts(
            session,
            ReviewItem,
            [{"prediction_id": p.id, "image_id": p.image_id, "job_id": job_id,
              "reason": "low_confidence", "priority": 0.3} for p in predictions],
            ["prediction_id"],
        )  # fmt: skip
    with session_scope(db_url) as session:
        items = session.scalars(select(ReviewItem)).all()
        # status was left out: the enum default, stored as its value and read back as the enum
        assert [i.status for i in items] == [ReviewStatus.PENDING] * 2
        assert session.get(ScanJob, job_id).status == JobStatus.QUEUED


class _Base(DeclarativeBase):
    """A throwaway schema: no herpscore table has a per-row callable default (yet)."""


class _Token(_Base):
    __tablename__ = "bulk_insert_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    token: Mapped[str] = mapped_column(String(36), default=lambda: str(uuid.uuid4()))


def test_a_callable_default_is_called_once_per_row(db_url):
    with session_scope(db_url) as session:
        _Base.metadata.create_all(session.connection())
        rows = [{"name": f"row-{i}"} for i in range(5)]
        insert_ignoring_conflicts(session, _Token, rows, ["name"])
        tokens = session.scalars(select(_Token.token)).all()
    assert len(tokens) == 5 and len(set(tokens)) == 5
