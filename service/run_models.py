"""Typed models of the loop's long work: dataset exports and training runs."""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.models import Base, created, intpk, str_enum, when


class ExportStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class DatasetExport(Base):
    """An immutable, versioned training-set folder written from curated labels."""

    __tablename__ = "dataset_exports"

    id: Mapped[intpk]
    status: Mapped[ExportStatus] = mapped_column(
        str_enum(ExportStatus), default=ExportStatus.QUEUED, nullable=False
    )
    path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    created_at: Mapped[created]
    enqueued_at: Mapped[when]  # last sent (the scheduler re-sends a lost message)
    finished_at: Mapped[when]


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class TrainingRun(Base):
    """One fine-tuning run on an export, its metrics and the promotion decision."""

    __tablename__ = "training_runs"

    id: Mapped[intpk]
    export_id: Mapped[int | None] = mapped_column(
        ForeignKey("dataset_exports.id", ondelete="SET NULL"), nullable=True, index=True
    )
    status: Mapped[RunStatus] = mapped_column(
        str_enum(RunStatus), default=RunStatus.QUEUED, nullable=False
    )
    trigger: Mapped[str] = mapped_column(String(20), nullable=False, default="manual")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    run_dir: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), nullable=True
    )
    promotion: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[created]
    enqueued_at: Mapped[when]  # last sent (the scheduler re-sends a lost message)
    started_at: Mapped[when]
    finished_at: Mapped[when]


class SuspectLabel(Base):
    """A verified label a training run's out-of-sample predictions disagree with (cleanlab).

    Linked to the run, the image and the human decision it questions (the image's current
    decision when the run was ranked). Never updated: a re-review is a new annotation, and
    the suspect counts as resolved once the image's current decision is another one.
    """

    __tablename__ = "suspect_labels"
    __table_args__ = (
        UniqueConstraint("run_id", "image_id"),
        Index("ix_suspect_labels_run_rank", "run_id", "rank"),
    )

    id: Mapped[intpk]
    run_id: Mapped[int] = mapped_column(
        ForeignKey("training_runs.id", ondelete="CASCADE"), nullable=False
    )
    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), nullable=False, index=True
    )
    annotation_id: Mapped[int] = mapped_column(
        ForeignKey("annotations.id", ondelete="CASCADE"), nullable=False, index=True
    )
    rank: Mapped[int] = mapped_column(Integer, nullable=False)  # 1 = most suspect
    given_label: Mapped[str] = mapped_column(String(200), nullable=False)
    given_probability: Mapped[float] = mapped_column(Float, nullable=False)
    predicted_label: Mapped[str] = mapped_column(String(200), nullable=False)
    predicted_probability: Mapped[float] = mapped_column(Float, nullable=False)
    split: Mapped[str] = mapped_column(String(10), nullable=False)
    method: Mapped[str] = mapped_column(String(10), nullable=False)  # holdout | kfold
    created_at: Mapped[created]
