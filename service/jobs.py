"""Scan jobs: creation, the status machine, progress, cancellation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.db import get_or_not_found, in_values, newest_first
from service.errors import BadInput, InvalidState
from service.models import Chunk, ChunkStatus, JobImage, JobStatus, ScanJob, utcnow
from service.paths import resolve_job_folder
from service.registry import get_model, require_active_model
from service.review.order import rank_job_queue
from service.settings import Settings

# Allowed transitions; every status change goes through `transition`.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.SCANNING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.SCANNING: frozenset(
        {
            JobStatus.SCANNING,
            JobStatus.SCORING,
            JobStatus.DONE,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.SCORING: frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.DONE: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}
FINISHED = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED})


def require_job_images(session: Session, job_id: int, image_ids: list[int]) -> None:
    """Refuse ids that are not images of this job: a post about one job acts on it alone."""
    found = set(
        session.scalars(
            select(JobImage.image_id).where(
                JobImage.job_id == job_id, in_values(session, JobImage.image_id, image_ids)
            )
        )
    )
    foreign = [image_id for image_id in image_ids if image_id not in found]
    if foreign:
        raise BadInput(
            f"{len(foreign)} of the selected images are not in job {job_id}; nothing was confirmed",
            {"image_ids": foreign[:20]},
        )


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in TRANSITIONS[current]


def transition(session: Session, job: ScanJob, target: JobStatus, error: str | None = None) -> bool:
    """Move a job to `target` if the status machine allows it; False (no change) otherwise.

    The UPDATE is conditional on the status read, so two workers racing to make the same
    move cannot both succeed.
    """
    current = job.status
    if not can_transition(current, target):
        return False
    now = utcnow()
    values: dict[str, Any] = {"status": target}
    if target == JobStatus.SCANNING and job.started_at is None:
        values["started_at"] = now
    if target == JobStatus.SCORING:
        values["scoring_started_at"] = job.scoring_started_at or now
    if target in FINISHED:
        values["finished_at"] = now
    if error is not None:
        values["error"] = error[:4000]
    result = session.execute(
        update(ScanJob)
        .where(ScanJob.id == job.id, ScanJob.status == current)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(job)
        return False
    session.refresh(job)
    return True


def create_job(
    session: Session,
    settings: Settings,
    folder: str,
    *,
    model_id: int | None = None,
    threshold: float | None = None,
    recursive: bool = True,
    extensions: list[str] | None = None,
    created_by: str = "",
) -> ScanJob:
    """Check the folder and the model, then record a queued job pinned to that model version."""
    resolved = resolve_job_folder(folder, settings.resolved_roots)
    model = get_model(session, model_id) if model_id is not None else require_active_model(session)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise BadInput("threshold must be between 0 and 1")
    exts = sorted({e.lower().lstrip(".") for e in (extensions or settings.image_extensions)})
    if not exts or any(not e.isalnum() for e in exts):
        raise BadInput("extensions must be a non-empty list like ['jpg', 'png']")
    job = ScanJob(
        folder=str(resolved),
        recursive=recursive,
        extensions=exts,
        model_version_id=model.id,
        threshold=settings.review_threshold if threshold is None else threshold,
        status=JobStatus.QUEUED,
        created_by=created_by,
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: int, lock: bool = False) -> ScanJob:
    """The job, or NotFound; `lock` holds its row until the transaction ends."""
    lock_row = {"of": ScanJob} if lock else None
    return get_or_not_found(session, ScanJob, job_id, "job", with_for_update=lock_row)


def list_jobs(
    session: Session, *, status: JobStatus | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[ScanJob], int]:
    """Newest first, paginated; returns the page and the total count."""
    query = select(ScanJob)
    if status is not None:
        query = query.where(ScanJob.status == status)
    return newest_first(session, query, ScanJob.id, limit, offset)


def cancel_job(session: Session, job_id: int) -> ScanJob:
    """Stop a job: its remaining chunks are skipped by the workers."""
    job = get_job(session, job_id)
    if job.status in FINISHED:
        raise InvalidState(f"job {job_id} is already {job.status.value}")
    if not transition(session, job, JobStatus.CANCELLED):
        raise InvalidState(f"job {job_id} is already {job.status.value}")
    session.execute(
        update(Chunk)
        .where(Chunk.job_id == job_id, Chunk.status == ChunkStatus.QUEUED)
        .values(status=ChunkStatus.CANCELLED)
    )
    return job


def fraction_done(done: int, total: int, scan_complete: bool) -> float:
    """done / total, kept under 1 while the scan may still find files: a progress bar at
    100 % for a job that has more to score would be a lie."""
    fraction = done / total if total else 0.0
    return round(fraction if scan_complete else min(fraction, 0.99), 4)


def job_progress(job: ScanJob, now: datetime | None = None) -> dict[str, Any]:
    """Counts, rate and ETA of a job, from its counters (no extra query)."""
    now = now or utcnow()
    done = job.scored + job.failed
    pending = max(job.total - done, 0)
    # Chunks are scored while the scan still runs, so the clock starts with the job.
    started = job.started_at or job.scoring_started_at
    end = job.finished_at or now
    elapsed = (end - started).total_seconds() if started else 0.0
    rate = done / elapsed if elapsed > 0 and done else 0.0
    eta = None
    if job.status not in FINISHED and rate > 0:
        eta = round(pending / rate, 1) if job.scan_complete else None
    return {
        "total": job.total,
        "scored": job.scored,
        "failed": job.failed,
        "routed_to_review": job.routed,
        "pending": pending,
        "scan_complete": job.scan_complete,
        "fraction_done": fraction_done(done, job.total, job.scan_complete),
        "images_per_second": round(rate, 2),
        "elapsed_seconds": round(elapsed, 1),
        "eta_seconds": eta,
    }


def job_to_dict(job: ScanJob) -> dict[str, Any]:
    """The public JSON shape of a job."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": job.id,
        "folder": job.folder,
        "recursive": job.recursive,
        "extensions": job.extensions,
        "status": job.status.value,
        "error": job.error,
        "model_version_id": job.model_version_id,
        "threshold": job.threshold,
        "created_by": job.created_by,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "progress": job_progress(job),
    }


def maybe_finish(session: Session, job_id: int, order: str = "confidence") -> bool:
    """Mark a job done once its scan is complete and no chunk is left, then put its review
    items in the queue's `order` (HERPSCORE_REVIEW_ORDER, see `rank_job_queue`); safe to
    call twice."""
    job = get_job(session, job_id)
    session.refresh(job)
    if job.status not in (JobStatus.SCANNING, JobStatus.SCORING) or not job.scan_complete:
        return False
    open_chunks = session.scalar(
        select(func.count())
        .select_from(Chunk)
        .where(Chunk.job_id == job_id, Chunk.status == ChunkStatus.QUEUED)
    )
    if open_chunks:
        return False
    if not transition(session, job, JobStatus.DONE):
        return False
    rank_job_queue(session, job_id, order)
    return True
