"""Scoring a chunk: read what to score, store predictions idempotently, route for review."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.db import insert_ignoring_conflicts, session_scope
from service.jobs import FINISHED, maybe_finish
from service.models import (
    Chunk,
    ChunkStatus,
    Image,
    ItemStatus,
    JobImage,
    JobStatus,
    ModelVersion,
    Prediction,
    ReviewItem,
    ScanJob,
    utcnow,
)
from service.review import images_with_human_decision
from service.routing import ReviewRules, route_for_review
from service.settings import Settings

log = logging.getLogger(__name__)
MAX_CHUNK_ATTEMPTS = 5


class FileOutcome(Protocol):
    """One file's result from the inference pipeline: a prediction or a failure."""

    label_index: int | None
    label: str | None
    confidence: float | None
    topk: list[tuple[str, float]] | None
    failure_reason: str | None
    failure_detail: str | None


Scorer = Callable[[ModelVersion, Sequence[str]], Sequence[FileOutcome]]


@dataclass
class ChunkWork:
    """What a chunk still needs, read in one short transaction."""

    job_id: int
    model: ModelVersion
    rules: ReviewRules
    job_image_ids: list[int]
    image_ids: list[int]
    paths: list[str]


@dataclass
class ChunkResult:
    scored: int = 0
    failed: int = 0
    routed: int = 0
    skipped: bool = False


def claim_chunk(session: Session, settings: Settings, chunk_id: int) -> ChunkWork | None:
    """Count an attempt and list the chunk's pending images; None when nothing is to be done."""
    chunk = session.get(Chunk, chunk_id)
    if chunk is None or chunk.status != ChunkStatus.QUEUED:
        return None
    job = session.get(ScanJob, chunk.job_id)
    if job is None or job.status in FINISHED:
        chunk.status = ChunkStatus.CANCELLED
        return None
    chunk.attempts += 1
    rows = session.execute(
        select(JobImage.id, Image.id, Image.path)
        .join(Image, Image.id == JobImage.image_id)
        .where(JobImage.chunk_id == chunk_id, JobImage.status == ItemStatus.PENDING)
        .order_by(JobImage.id)
    ).all()
    rules = ReviewRules(threshold=job.threshold, always_review=frozenset(settings.review_labels))
    return ChunkWork(
        job_id=job.id,
        model=job.model_version,
        rules=rules,
        job_image_ids=[r[0] for r in rows],
        image_ids=[r[1] for r in rows],
        paths=[r[2] for r in rows],
    )


def give_up_chunk(session: Session, chunk_id: int, job_id: int, attempts: int) -> None:
    """A chunk that killed its worker too often: its images fail with a reason, the job goes on."""
    result = session.execute(
        update(JobImage)
        .where(JobImage.chunk_id == chunk_id, JobImage.status == ItemStatus.PENDING)
        .values(
            status=ItemStatus.FAILED,
            failure_reason="gave_up",
            failure_detail=f"scoring was interrupted {attempts} times (a worker crashed)",
        )
    )
    count = result.rowcount  # type: ignore[attr-defined]
    session.execute(
        update(ScanJob).where(ScanJob.id == job_id).values(failed=ScanJob.failed + count)
    )
    session.execute(
        update(Chunk)
        .where(Chunk.id == chunk_id)
        .values(status=ChunkStatus.DONE, finished_at=utcnow())
    )


def store_results(
    session: Session, chunk_id: int, work: ChunkWork, outcomes: Sequence[FileOutcome]
) -> ChunkResult:
    """Write predictions (upsert), review items and image outcomes; idempotent per chunk."""
    model_id = work.model.id
    ok = [
        (image_id, out)
        for image_id, out in zip(work.image_ids, outcomes, strict=True)
        if out.failure_reason is None and out.confidence is not None
    ]
    rows: list[dict[str, Any]] = [
        {
            "image_id": image_id,
            "model_version_id": model_id,
            "job_id": work.job_id,
            "label": out.label,
            "label_index": out.label_index,
            "confidence": float(out.confidence or 0.0),
            "topk": [[label, round(float(p), 6)] for label, p in out.topk or []],
            "created_at": utcnow(),
        }
        for image_id, out in ok
    ]
    insert_ignoring_conflicts(session, Prediction, rows, ["image_id", "model_version_id"])
    scored_images = [image_id for image_id, _ in ok]
    predictions = {
        p.image_id: p
        for p in session.scalars(
            select(Prediction).where(
                Prediction.model_version_id == model_id, Prediction.image_id.in_(scored_images)
            )
        )
    }
    # A human's current decision is final: re-scoring never re-queues that image.
    human_decided = images_with_human_decision(session, list(predictions))
    review_rows = []
    for pred in predictions.values():
        reason = route_for_review(pred.label, pred.confidence, pred.topk, work.rules)
        if reason is not None and pred.image_id not in human_decided:
            review_rows.append(
                {
                    "prediction_id": pred.id,
                    "image_id": pred.image_id,
                    "job_id": work.job_id,
                    "reason": reason,
                    "priority": 1.0 - pred.confidence,
                    "created_at": utcnow(),
                }
            )
    insert_ignoring_conflicts(session, ReviewItem, review_rows, ["prediction_id"])
    routed_images = {row["image_id"] for row in review_rows}

    result = ChunkResult()
    by_image = dict(zip(work.image_ids, work.job_image_ids, strict=True))
    scored_ids = [by_image[i] for i in scored_images]
    if scored_ids:
        newly = session.scalars(
            update(JobImage)
            .where(JobImage.id.in_(scored_ids), JobImage.status == ItemStatus.PENDING)
            .values(status=ItemStatus.SCORED)
            .returning(JobImage.image_id)
        ).all()
        result.scored = len(newly)
        result.routed = sum(1 for image_id in newly if image_id in routed_images)
    for image_id, out in zip(work.image_ids, outcomes, strict=True):
        if out.failure_reason is None:
            continue
        changed = session.execute(
            update(JobImage)
            .where(JobImage.id == by_image[image_id], JobImage.status == ItemStatus.PENDING)
            .values(
                status=ItemStatus.FAILED,
                failure_reason=out.failure_reason[:64],
                failure_detail=(out.failure_detail or "")[:2000],
            )
        )
        result.failed += changed.rowcount  # type: ignore[attr-defined]
    session.execute(
        update(ScanJob)
        .where(ScanJob.id == work.job_id)
        .values(
            scored=ScanJob.scored + result.scored,
            failed=ScanJob.failed + result.failed,
            routed=ScanJob.routed + result.routed,
        )
    )
    session.execute(
        update(Chunk)
        .where(Chunk.id == chunk_id)
        .values(status=ChunkStatus.DONE, finished_at=utcnow())
    )
    return result


def reuse_existing(session: Session, work: ChunkWork) -> dict[int, Prediction]:
    """Predictions this model version already made for these images (by an earlier job)."""
    return {
        p.image_id: p
        for p in session.scalars(
            select(Prediction).where(
                Prediction.model_version_id == work.model.id,
                Prediction.image_id.in_(work.image_ids),
            )
        )
    }


@dataclass
class _Known:
    """An earlier prediction replayed as a pipeline outcome (no inference needed)."""

    label_index: int | None
    label: str | None
    confidence: float | None
    topk: list[tuple[str, float]] | None
    failure_reason: str | None = None
    failure_detail: str | None = None


def score_chunk(settings: Settings, chunk_id: int, scorer: Scorer) -> ChunkResult:
    """Score one chunk end to end: claim, infer outside any transaction, store, maybe finish."""
    with session_scope(settings.db_url) as session:
        chunk = session.get(Chunk, chunk_id)
        work = claim_chunk(session, settings, chunk_id)
        if work is None:
            return ChunkResult(skipped=True)
        if chunk is not None and chunk.attempts > MAX_CHUNK_ATTEMPTS:
            give_up_chunk(session, chunk_id, work.job_id, chunk.attempts - 1)
            job_id = work.job_id
            work = None
        else:
            known = reuse_existing(session, work)
    if work is None:
        with session_scope(settings.db_url) as session:
            maybe_finish(session, job_id)
        return ChunkResult()

    todo = [(i, p) for i, p in zip(work.image_ids, work.paths, strict=True) if i not in known]
    fresh = iter(scorer(work.model, [p for _, p in todo])) if todo else iter(())
    outcomes: list[FileOutcome] = []
    for image_id in work.image_ids:
        if image_id in known:
            p = known[image_id]
            topk = [(str(t[0]), float(t[1])) for t in p.topk]
            outcomes.append(_Known(p.label_index, p.label, p.confidence, topk))
        else:
            outcomes.append(next(fresh))

    with session_scope(settings.db_url) as session:
        job = session.get(ScanJob, work.job_id)
        if job is None or job.status == JobStatus.CANCELLED:
            return ChunkResult(skipped=True)
        result = store_results(session, chunk_id, work, outcomes)
    with session_scope(settings.db_url) as session:
        maybe_finish(session, work.job_id)
    return result


def requeue_stalled(session: Session, settings: Settings) -> tuple[list[int], list[int]]:
    """Chunks and jobs whose message was lost (embedded broker, a crash before sending).

    Returns (chunk ids, job ids) to send again; their clocks restart so they are not
    re-sent on every check. Writes are idempotent, so a duplicate costs only time.
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=settings.chunk_lease_seconds)
    chunk_ids = list(
        session.scalars(
            select(Chunk.id)
            .join(ScanJob, ScanJob.id == Chunk.job_id)
            .where(
                Chunk.status == ChunkStatus.QUEUED,
                Chunk.enqueued_at < cutoff,
                ScanJob.status.in_([JobStatus.SCANNING, JobStatus.SCORING]),
            )
        )
    )
    if chunk_ids:
        session.execute(update(Chunk).where(Chunk.id.in_(chunk_ids)).values(enqueued_at=now))
    job_ids = list(
        session.scalars(
            select(ScanJob.id).where(
                ScanJob.status == JobStatus.QUEUED, ScanJob.created_at < cutoff
            )
        )
    )
    return chunk_ids, job_ids
