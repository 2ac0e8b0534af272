"""Scoring a chunk: read what to score, store predictions idempotently, route for review."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from service.db import in_values, insert_ignoring_conflicts, session_scope
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
class _Known:
    """An earlier prediction replayed as a pipeline outcome (no inference needed)."""

    label_index: int | None
    label: str | None
    confidence: float | None
    topk: list[tuple[str, float]] | None
    failure_reason: str | None = None
    failure_detail: str | None = None


@dataclass
class ChunkWork:
    """What a chunk still needs, read in one short transaction."""

    job_id: int
    model: ModelVersion
    rules: ReviewRules
    job_image_ids: list[int]
    image_ids: list[int]
    paths: list[str]
    known: dict[int, _Known]  # image id -> this model version's earlier prediction


@dataclass
class ChunkResult:
    scored: int = 0
    failed: int = 0
    routed: int = 0
    skipped: bool = False
    seconds: dict[str, float] = field(default_factory=dict)  # claim, model, store: for logs


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
    # One query for the images and, for those this model version already scored (in an
    # earlier job), that prediction: it is replayed instead of running the model again.
    earlier = and_(
        Prediction.image_id == Image.id, Prediction.model_version_id == job.model_version_id
    )
    rows = session.execute(
        select(
            JobImage.id,
            Image.id,
            Image.path,
            Prediction.label_index,
            Prediction.label,
            Prediction.confidence,
            Prediction.topk,
        )
        .join(Image, Image.id == JobImage.image_id)
        .outerjoin(Prediction, earlier)
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
        known={
            r[1]: _Known(r[3], r[4], r[5], [(str(t[0]), float(t[1])) for t in r[6]])
            for r in rows
            if r[5] is not None
        },
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
    ok = [
        (image_id, out)
        for image_id, out in zip(work.image_ids, outcomes, strict=True)
        if out.failure_reason is None and out.confidence is not None
    ]
    predictions = _store_predictions(session, work, ok)
    routed_images = _route_predictions(session, work, predictions)
    scored, routed = _mark_scored(session, work, [image_id for image_id, _ in ok], routed_images)
    result = ChunkResult(scored=scored, failed=_mark_failed(session, work, outcomes), routed=routed)
    _close_chunk(session, chunk_id, work.job_id, result)
    return result


# A stored prediction as plain values: (image id, prediction id, label, confidence, top-k).
StoredPrediction = tuple[int, int, str, float, list[Any]]


def _store_predictions(
    session: Session, work: ChunkWork, ok: list[tuple[int, FileOutcome]]
) -> list[StoredPrediction]:
    """Insert the chunk's predictions (an existing one for the same model version is kept)."""
    model_id = work.model.id
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
    inserted = dict(
        insert_ignoring_conflicts(
            session, Prediction, rows, ["image_id", "model_version_id"], ("image_id", "id")
        )
    )
    # What is stored: the rows just inserted, and for images this model version scored in
    # an earlier job, the earlier row that the upsert kept, read back as plain rows.
    predictions: list[StoredPrediction] = [
        (row["image_id"], inserted[row["image_id"]], row["label"], row["confidence"], row["topk"])
        for row in rows
        if row["image_id"] in inserted
    ]
    if kept := [image_id for image_id, _ in ok if image_id not in inserted]:
        predictions += session.execute(
            select(
                Prediction.image_id, Prediction.id, Prediction.label, Prediction.confidence,
                Prediction.topk,
            ).where(
                Prediction.model_version_id == model_id,
                in_values(session, Prediction.image_id, kept),
            )
        ).all()  # fmt: skip
    return predictions


def _route_predictions(
    session: Session, work: ChunkWork, predictions: list[StoredPrediction]
) -> set[int]:
    """Queue the uncertain or risky predictions for review; returns the images routed."""
    # A human's current decision is final: re-scoring never re-queues that image.
    human_decided = images_with_human_decision(session, [p[0] for p in predictions])
    review_rows: list[dict[str, Any]] = []
    for image_id, prediction_id, label, confidence, topk in predictions:
        reason = route_for_review(label, confidence, topk, work.rules)
        if reason is not None and image_id not in human_decided:
            review_rows.append(
                {
                    "prediction_id": prediction_id,
                    "image_id": image_id,
                    "job_id": work.job_id,
                    "reason": reason,
                    "priority": 1.0 - confidence,
                    "created_at": utcnow(),
                }
            )
    insert_ignoring_conflicts(session, ReviewItem, review_rows, ["prediction_id"])
    return {row["image_id"] for row in review_rows}


def _mark_scored(
    session: Session, work: ChunkWork, scored_images: list[int], routed_images: set[int]
) -> tuple[int, int]:
    """Mark the job images still pending as scored; returns (newly scored, of them routed)."""
    by_image = dict(zip(work.image_ids, work.job_image_ids, strict=True))
    scored_ids = [by_image[i] for i in scored_images]
    if not scored_ids:
        return 0, 0
    newly = session.scalars(
        update(JobImage)
        .where(in_values(session, JobImage.id, scored_ids), JobImage.status == ItemStatus.PENDING)
        .values(status=ItemStatus.SCORED)
        .returning(JobImage.image_id)
    ).all()
    return len(newly), sum(1 for image_id in newly if image_id in routed_images)


def _mark_failed(session: Session, work: ChunkWork, outcomes: Sequence[FileOutcome]) -> int:
    """Record each failed file's reason on its job image (if still pending); returns how many."""
    by_image = dict(zip(work.image_ids, work.job_image_ids, strict=True))
    failed = 0
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
        failed += changed.rowcount  # type: ignore[attr-defined]
    return failed


def _close_chunk(session: Session, chunk_id: int, job_id: int, result: ChunkResult) -> None:
    """Add the chunk's counts to its job and mark the chunk done."""
    session.execute(
        update(ScanJob)
        .where(ScanJob.id == job_id)
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


def score_chunk(settings: Settings, chunk_id: int, scorer: Scorer) -> ChunkResult:
    """Score one chunk end to end: claim, infer outside any transaction, store, maybe finish."""
    began = time.perf_counter()
    with session_scope(settings.db_url) as session:
        chunk = session.get(Chunk, chunk_id)
        work = claim_chunk(session, settings, chunk_id)
        if work is None:
            return ChunkResult(skipped=True)
        if chunk is not None and chunk.attempts > MAX_CHUNK_ATTEMPTS:
            give_up_chunk(session, chunk_id, work.job_id, chunk.attempts - 1)
            job_id = work.job_id
            work = None
    if work is None:
        with session_scope(settings.db_url) as session:
            maybe_finish(session, job_id)
        return ChunkResult()

    claimed = time.perf_counter()
    known = work.known
    todo = [(i, p) for i, p in zip(work.image_ids, work.paths, strict=True) if i not in known]
    fresh = iter(scorer(work.model, [p for _, p in todo])) if todo else iter(())
    outcomes: list[FileOutcome] = []
    for image_id in work.image_ids:
        if image_id in known:
            outcomes.append(known[image_id])
        else:
            outcomes.append(next(fresh))

    scored = time.perf_counter()
    with session_scope(settings.db_url) as session:
        job = session.get(ScanJob, work.job_id)
        if job is None or job.status == JobStatus.CANCELLED:
            return ChunkResult(skipped=True)
        result = store_results(session, chunk_id, work, outcomes)
        # In the same transaction: store_results updated the job's row first, and that row
        # lock orders the chunks that finish together, so the last of them (in commit
        # order) counts every other as done and finishes the job. One round trip saved.
        maybe_finish(session, work.job_id)
    result.seconds = {
        "claim": round(claimed - began, 4),
        "model": round(scored - claimed, 4),
        "store": round(time.perf_counter() - scored, 4),
    }
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
