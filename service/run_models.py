"""Typed models of the loop's long work: dataset exports and training runs."""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text
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
