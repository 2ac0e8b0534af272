"""Scoring a chunk: read what to score, store predictions idempotently, route for review."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import and_, insert, select, update
from sqlalchemy.orm import Session, aliased

from service import display, thumbnails
from service.db import in_values, insert_ignoring_conflicts, session_scope
from service.jobs import FINISHED, maybe_finish
from service.logs import tag_job
from service.models import (
    Chunk,
    ChunkStatus,
    Image,
    JobImage,
    JobImageStatus,
    JobStatus,
    ModelVersion,
    Prediction,
    ReviewItem,
    ScanJob,
    utcnow,
)
from service.review import images_with_human_decision
from service.routing import ReviewRules, Routing, route_for_review
from service.settings import Settings
from service.species import routing_rules

log = logging.getLogger(__name__)
# A chunk claimed again before any attempt finished was interrupted (its worker process
# died: a decoder crash, the kernel's OOM killer, kill -9). It is split into SPLIT_WAYS
# pieces, again and again, so that a file that kills workers ends up alone and fails alone
# (`killed_worker`) after SINGLE_FILE_ATTEMPTS, while the rest of the chunk scores.
SPLIT_WAYS = 4
SINGLE_FILE_ATTEMPTS = 2
# Made once: an alias built per chunk proxies every column of the table again (CPU per chunk).
_MINE, _TWIN = aliased(Image, name="mine"), aliased(Image, name="twin")


class FileOutcome(Protocol):
    """One file's result from the inference pipeline: a prediction or a failure."""

    label_index: int | None
    label: str | None
    confidence: float | None
    topk: list[tuple[str, float]] | None
    failure_reason: str | None
    failure_detail: str | None
    phash: str | None  # perceptual hash of the decoded image (service/bursts.py)
    thumbnail: bytes | None  # JPEG made from the same decode, or None (service/thumbnails.py)


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
    phash: str | None = None  # a byte twin's stored hash (same bytes, same hash)
    thumbnail: bytes | None = None  # never decoded here: rendered from the file if missing


@dataclass
class ChunkWork:
    """What a chunk still needs, read in one short transaction."""

    job_id: int
    model: ModelVersion
    rules: ReviewRules
    job_image_ids: list[int]
    image_ids: list[int]
    paths: list[str]
    sha256s: list[str | None]
    known: dict[int, _Known]  # image id -> this model version's earlier prediction


@dataclass
class ChunkResult:
    scored: int = 0
    failed: int = 0
    routed: int = 0
    skipped: bool = False
    split: list[int] = field(default_factory=list)  # new chunks to send (see split_chunk)
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
            Image.sha256,
            Prediction.label_index,
            Prediction.label,
            Prediction.confidence,
            Prediction.topk,
        )
        .join(Image, Image.id == JobImage.image_id)
        .outerjoin(Prediction, earlier)
        .where(JobImage.chunk_id == chunk_id, JobImage.status == JobImageStatus.PENDING)
        .order_by(JobImage.id)
    ).all()
    rules = routing_rules(
        session, job.threshold, settings.review_labels, settings.venom_alert,
        settings.lookalike_margin,
    )  # fmt: skip
    known = {
        r[1]: _Known(r[4], r[5], r[6], [(str(t[0]), float(t[1])) for t in r[7]])
        for r in rows
        if r[6] is not None
    }
    known.update(_byte_twins(session, [r[1] for r in rows if r[6] is None], job.model_version_id))
    return ChunkWork(
        job_id=job.id,
        model=job.model_version,
        rules=rules,
        job_image_ids=[r[0] for r in rows],
        image_ids=[r[1] for r in rows],
        paths=[r[2] for r in rows],
        sha256s=[r[3] for r in rows],
        known=known,
    )


def _byte_twins(session: Session, image_ids: list[int], model_version_id: int) -> dict[int, _Known]:
    """For images this model version never scored, the prediction it made on another image
    with the same bytes (sha256): a copy at another path is not scored again."""
    if not image_ids:
        return {}
    mine, twin = _MINE, _TWIN
    rows = session.execute(
        select(
            mine.id, Prediction.label_index, Prediction.label, Prediction.confidence,
            Prediction.topk, twin.phash,
        )
        .join(twin, and_(twin.sha256 == mine.sha256, twin.id != mine.id))
        .join(
            Prediction,
            and_(Prediction.image_id == twin.id, Prediction.model_version_id == model_version_id),
        )
        .where(in_values(session, mine.id, image_ids), mine.sha256.is_not(None))
        .order_by(mine.id, Prediction.id)
    ).all()  # fmt: skip
    known: dict[int, _Known] = {}
    for image_id, index, label, confidence, topk, phash in rows:
        topk_pairs = [(str(t[0]), float(t[1])) for t in topk]
        known.setdefault(image_id, _Known(index, label, confidence, topk_pairs, phash=phash))
    return known


def fail_killer(session: Session, chunk_id: int, job_id: int, attempts: int) -> None:
    """A one-file chunk that killed its worker every time: the file fails, the job goes on."""
    result = session.execute(
        update(JobImage)
        .where(JobImage.chunk_id == chunk_id, JobImage.status == JobImageStatus.PENDING)
        .values(
            status=JobImageStatus.FAILED,
            failure_reason="killed_worker",
            failure_detail=f"scoring this file stopped its worker process {attempts} times "
            "(a decoder crash or running out of memory)",
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


def split_chunk(
    session: Session, chunk_id: int, job_id: int, job_image_ids: list[int]
) -> list[int]:
    """Move an interrupted chunk's pending images into up to SPLIT_WAYS new chunks (ids,
    to send after the commit); the chunk itself is done."""
    job = session.get(ScanJob, job_id, with_for_update={"of": ScanJob})  # seq numbers
    assert job is not None
    step = -(-len(job_image_ids) // SPLIT_WAYS)
    pieces = [job_image_ids[i : i + step] for i in range(0, len(job_image_ids), step)]
    now = utcnow()
    new_ids = list(
        session.scalars(
            insert(Chunk).returning(Chunk.id, sort_by_parameter_order=True),
            [
                {"job_id": job_id, "seq": job.chunks_total + 1 + i, "size": len(piece),
                 "enqueued_at": now}
                for i, piece in enumerate(pieces)
            ],
        )
    )  # fmt: skip
    for new_id, piece in zip(new_ids, pieces, strict=True):
        session.execute(
            update(JobImage)
            .where(in_values(session, JobImage.id, piece))
            .values(chunk_id=new_id)
            .execution_options(synchronize_session=False)
        )
    session.execute(
        update(ScanJob)
        .where(ScanJob.id == job_id)
        .values(chunks_total=ScanJob.chunks_total + len(new_ids))
    )
    session.execute(
        update(Chunk).where(Chunk.id == chunk_id).values(status=ChunkStatus.DONE, finished_at=now)
    )
    return new_ids


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
    _store_hashes(session, ok)
    routed_images = _route_predictions(session, work, predictions)
    scored, routed = _mark_scored(session, work, [image_id for image_id, _ in ok], routed_images)
    result = ChunkResult(scored=scored, failed=_mark_failed(session, work, outcomes), routed=routed)
    _close_chunk(session, chunk_id, work.job_id, result)
    return result


# A stored prediction: (image id, prediction id, how it routes), routed once per prediction.
StoredPrediction = tuple[int, int, Routing]


def _store_predictions(
    session: Session, work: ChunkWork, ok: list[tuple[int, FileOutcome]]
) -> list[StoredPrediction]:
    """Insert the chunk's predictions (an existing one for the same model version is kept)."""
    model_id = work.model.id
    routings = {
        image_id: route_for_review(
            out.label or "", out.confidence or 0.0, out.topk or [], work.rules
        )
        for image_id, out in ok
    }
    rows: list[dict[str, Any]] = [
        {
            "image_id": image_id,
            "model_version_id": model_id,
            "job_id": work.job_id,
            "label": out.label,
            "label_index": out.label_index,
            "confidence": float(out.confidence or 0.0),
            "topk": [[label, round(float(p), 6)] for label, p in out.topk or []],
            "rolled_up_label": routings[image_id].rolled_up_label,
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
        (image_id, inserted[image_id], routings[image_id])
        for image_id, _ in ok
        if image_id in inserted
    ]
    if kept := [image_id for image_id, _ in ok if image_id not in inserted]:
        predictions += [
            (image_id, prediction_id, route_for_review(label, confidence, topk, work.rules))
            for image_id, prediction_id, label, confidence, topk in session.execute(
                select(
                    Prediction.image_id, Prediction.id, Prediction.label, Prediction.confidence,
                    Prediction.topk,
                ).where(
                    Prediction.model_version_id == model_id,
                    in_values(session, Prediction.image_id, kept),
                )
            )
        ]  # fmt: skip
    return predictions


def _store_hashes(session: Session, ok: list[tuple[int, FileOutcome]]) -> None:
    """Keep each freshly decoded image's perceptual hash on its row (bursts group by it)."""
    rows = [{"id": image_id, "phash": out.phash} for image_id, out in ok if out.phash]
    if rows:
        session.execute(update(Image), rows, execution_options={"synchronize_session": False})


def _route_predictions(
    session: Session, work: ChunkWork, predictions: list[StoredPrediction]
) -> set[int]:
    """Queue the uncertain or risky predictions for review; returns the images routed."""
    # A human's current decision is final: re-scoring never re-queues that image.
    human_decided = images_with_human_decision(session, [p[0] for p in predictions])
    review_rows: list[dict[str, Any]] = []
    for image_id, prediction_id, routing in predictions:
        if routing.needs_review and image_id not in human_decided:
            review_rows.append(
                {
                    "prediction_id": prediction_id,
                    "image_id": image_id,
                    "job_id": work.job_id,
                    "reason": routing.reason,
                    "reasons": list(routing.reasons),
                    "venom_risk": routing.venom_risk,
                    "priority": routing.priority,
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
        .where(
            in_values(session, JobImage.id, scored_ids), JobImage.status == JobImageStatus.PENDING
        )
        .values(status=JobImageStatus.SCORED)
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
            .where(JobImage.id == by_image[image_id], JobImage.status == JobImageStatus.PENDING)
            .values(
                status=JobImageStatus.FAILED,
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
        if work is None or chunk is None:
            return ChunkResult(skipped=True)
        tag_job(work.job_id)
        interrupted = chunk.attempts - 1  # earlier claims that never finished
        if interrupted and len(work.job_image_ids) > 1:
            split = split_chunk(session, chunk_id, work.job_id, work.job_image_ids)
            return ChunkResult(skipped=True, split=split)
        if interrupted >= SINGLE_FILE_ATTEMPTS and work.job_image_ids:
            fail_killer(session, chunk_id, work.job_id, interrupted)
            maybe_finish(session, work.job_id, settings.review_order)
            return ChunkResult(failed=len(work.job_image_ids))

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
        maybe_finish(session, work.job_id, settings.review_order)
    stored = time.perf_counter()
    if settings.thumbnails_when_scoring:  # job pages, strips and suspects never wait for one
        thumbnails.store_thumbnails(settings, _made_thumbnails(work, outcomes))
    thumbs = time.perf_counter()
    if result.routed:  # the review page's photos, made before any reviewer asks
        display.prepare_for_review(settings, work.image_ids)
    result.seconds = {
        "claim": round(claimed - began, 4),
        "model": round(scored - claimed, 4),
        "store": round(stored - scored, 4),
        "thumbnails": round(thumbs - stored, 4),
        "display": round(time.perf_counter() - thumbs, 4),
    }
    return result


def _made_thumbnails(
    work: ChunkWork, outcomes: Sequence[FileOutcome]
) -> list[tuple[str | None, str, bytes | None]]:
    """(sha256, path, JPEG or None) of each photo that scored; failed ones have none."""
    return [
        (sha256, path, out.thumbnail)
        for sha256, path, out in zip(work.sha256s, work.paths, outcomes, strict=True)
        if out.failure_reason is None
    ]
