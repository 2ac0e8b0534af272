"""The review page's view model: an item with its image, prediction, siblings, burst, labels."""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from service.bursts import BurstRules, burst_members
from service.decisions import current_annotations
from service.field_facts import image_facts, species_marks
from service.field_models import Species
from service.models import (
    Annotation,
    Decision,
    Image,
    JobImage,
    ModelVersion,
    Prediction,
    ReviewItem,
    ReviewStatus,
    folder_of,
    utcnow,
)
from service.review.annotations import SETTLING, _iso, annotation_to_dict, current_label
from service.review.counters import queue_counts
from service.routing import describe_reasons

SIBLINGS_EACH_SIDE = 4
ImageUrl = Callable[[int], str]


def queue_stats(
    session: Session, reviewer: str | None = None, job_id: int | None = None
) -> dict[str, Any]:
    """Queue counts: pending, free to claim, held by others, done; and the reviewer's own."""
    now = utcnow()
    # Pending and done are stored counters (service/review/counters.py), not counts.
    pending, done = queue_counts(session, job_id)
    # Items under a live lease are few and have their own index; the rest are free.
    leased = (
        select(func.count())
        .select_from(ReviewItem)
        .where(
            ReviewItem.status == ReviewStatus.PENDING,
            ReviewItem.claimed_by.is_not(None),
            ReviewItem.lease_expires_at > now,
        )
    )
    if job_id is not None:
        leased = leased.where(ReviewItem.job_id == job_id)
    claimed = int(session.scalar(leased) or 0)
    stats: dict[str, Any] = {
        "pending": pending,
        "available": max(0, pending - claimed),
        "claimed": claimed,
        "done": done,
    }
    if reviewer is not None:
        since = now - timedelta(days=1)
        stats["reviewer"] = reviewer
        stats["decided_by_you_24h"] = int(
            session.scalar(
                select(func.count())
                .select_from(Annotation)
                .where(
                    Annotation.reviewer == reviewer,
                    Annotation.undone_at.is_(None),
                    Annotation.decision.in_(SETTLING),
                    Annotation.created_at >= since,
                )
            )
            or 0
        )
    return stats


def known_labels(session: Session, model_version_id: int | None = None) -> list[str]:
    """Labels a reviewer may pick: the model's classes plus every label a human has used."""
    labels: set[str] = set()
    if model_version_id is not None:
        model = session.get(ModelVersion, model_version_id)
        if model is not None:
            labels.update(model.labels)
    labels.update(_human_labels(session))
    return sorted(labels, key=str.casefold)


def label_names(session: Session, labels: Sequence[str]) -> dict[str, dict[str, str]]:
    """The species table's common and scientific names of these labels (those that have any),
    so a search for "philippine cobra" finds `Naja_philippinensis`."""
    if not labels:
        return {}
    rows = session.execute(
        select(Species.label, Species.common_name, Species.scientific_name).where(
            Species.label.in_(labels)
        )
    ).all()
    return {
        label: {"common_name": common, "scientific_name": scientific}
        for label, common, scientific in rows
        if common or scientific
    }


def _human_labels(session: Session) -> list[str]:
    """Every label of a live human decision, skipping through the label index: one probe
    per distinct label (a few hundred) instead of a read of every annotation (millions)."""
    other = aliased(Annotation)
    seed = select(func.min(Annotation.label).label("label")).where(Annotation.label.is_not(None))
    walk = seed.cte("labels", recursive=True)
    following = select(func.min(other.label)).where(other.label > walk.c.label).scalar_subquery()
    walk = walk.union_all(select(following).where(walk.c.label.is_not(None)))
    live = (
        select(Annotation.id)
        .where(
            Annotation.label == walk.c.label,
            Annotation.decision == Decision.LABEL,
            Annotation.undone_at.is_(None),
        )
        .exists()
    )
    return list(session.scalars(select(walk.c.label).where(walk.c.label.is_not(None), live)))


def describe_reason(reason: str) -> str:
    """The routing reasons in words (see service.routing)."""
    return describe_reasons(reason)


def _siblings(
    session: Session,
    job_id: int,
    rel_path: str,
    model_version_id: int,
    image_url: ImageUrl | None,
) -> list[dict[str, Any]]:
    """Images of the same job in the same folder, a few on each side of this one, in order."""
    # The folder is stored with each job image: an index range, not a scan of the job.
    base = select(JobImage.image_id, JobImage.rel_path).where(
        JobImage.job_id == job_id, JobImage.folder == folder_of(rel_path)
    )
    before = session.execute(
        base.where(JobImage.rel_path < rel_path)
        .order_by(JobImage.rel_path.desc())
        .limit(SIBLINGS_EACH_SIDE)
    ).all()
    after = session.execute(
        base.where(JobImage.rel_path >= rel_path)
        .order_by(JobImage.rel_path)
        .limit(SIBLINGS_EACH_SIDE + 1)
    ).all()
    return _strip(session, [*reversed(before), *after], rel_path, model_version_id, image_url)


def _burst(
    session: Session,
    job_id: int,
    image_id: int,
    model_version_id: int,
    image_url: ImageUrl | None,
    rules: BurstRules,
) -> list[dict[str, Any]]:
    """The other photos of this photo's burst and itself, in capture order; [] when alone."""
    members = burst_members(session, job_id, image_id, rules)
    if len(members) < 2:
        return []
    paths = dict(
        session.execute(
            select(JobImage.image_id, JobImage.rel_path).where(
                JobImage.job_id == job_id, JobImage.image_id.in_(members)
            )
        ).all()
    )
    rows = [(i, paths[i]) for i in members if i in paths]
    return _strip(session, rows, paths.get(image_id, ""), model_version_id, image_url)


def _strip(
    session: Session,
    rows: Sequence[Any],
    rel_path: str,
    model_version_id: int,
    image_url: ImageUrl | None,
) -> list[dict[str, Any]]:
    """Thumbnails with what the machine and any human said, for (image id, rel path) rows."""
    ids = [r[0] for r in rows]
    machine = dict(
        session.execute(
            select(Prediction.image_id, Prediction.label).where(
                Prediction.image_id.in_(ids), Prediction.model_version_id == model_version_id
            )
        ).all()
    )
    human = {a.image_id: a for a in _current_decisions(session, ids)}
    return [
        {
            "image_id": image_id,
            "name": posixpath.basename(path),
            "rel_path": path,
            "current": path == rel_path,
            "machine_label": machine.get(image_id),
            "human_decision": human[image_id].decision.value if image_id in human else None,
            "human_label": human[image_id].label if image_id in human else None,
            "thumbnail_url": image_url(image_id) if image_url else None,
        }
        for image_id, path in rows
    ]


def _current_decisions(session: Session, image_ids: Sequence[int]) -> list[Annotation]:
    """The current human decision of each of these images that has one."""
    return list(current_annotations(session, image_ids).values())


def item_context(
    session: Session,
    item: ReviewItem,
    *,
    reviewer: str | None = None,
    job_id: int | None = None,
    image_url: ImageUrl | None = None,
    thumbnail_url: ImageUrl | None = None,
    with_stats: bool = True,
    burst_rules: BurstRules | None = None,
) -> dict[str, Any]:
    """Everything the review page shows for one item; URLs come from the web layer.

    `reviewer` and `job_id` scope the queue counts (the queue the reviewer is working on);
    `with_stats=False` leaves them out (items held ahead: the answer carries them once).
    """
    image = session.get(Image, item.image_id)
    prediction = session.get(Prediction, item.prediction_id)
    assert image is not None and prediction is not None  # foreign keys, cascading deletes
    job_image = None
    if item.job_id is not None:
        job_image = session.scalar(
            select(JobImage).where(
                JobImage.job_id == item.job_id, JobImage.image_id == item.image_id
            )
        )
    rel_path = job_image.rel_path if job_image else posixpath.basename(image.path)
    model = session.get(ModelVersion, prediction.model_version_id)
    decision = current_label(session, image.id)
    marks = species_marks(session, [str(entry[0]) for entry in prediction.topk])
    labels = known_labels(session, prediction.model_version_id)
    return {
        "id": item.id,
        "status": item.status.value,
        "reason": item.reason,
        "reason_text": describe_reason(item.reason),
        "reasons": item.reasons or [item.reason],
        "venom_risk": item.venom_risk,
        "priority": item.priority,
        "job_id": item.job_id,
        "claimed_by": item.claimed_by,
        "lease_expires_at": _iso(item.lease_expires_at),
        "decided_at": _iso(item.decided_at),
        "image": {
            "id": image.id,
            "path": image.path,
            "rel_path": rel_path,
            **image_facts(session, image, job_image),
            "width": image.width,
            "height": image.height,
            "url": image_url(image.id) if image_url else None,
        },
        "prediction": {
            "label": prediction.label,
            "confidence": prediction.confidence,
            "model_version_id": prediction.model_version_id,
            "model_name": model.name if model else None,
            "topk": [
                {
                    "rank": rank,
                    "label": str(entry[0]),
                    "confidence": float(entry[1]),
                    **marks.get(str(entry[0]), {"venomous": False, "common_name": ""}),
                }
                for rank, entry in enumerate(prediction.topk, start=1)
            ],
        },
        "human": annotation_to_dict(decision) if decision else None,
        "siblings": _siblings(
            session, item.job_id, rel_path, prediction.model_version_id, thumbnail_url
        )
        if job_image is not None and item.job_id is not None
        else [],
        "burst": _burst(
            session,
            item.job_id,
            image.id,
            prediction.model_version_id,
            thumbnail_url,
            burst_rules,
        )
        if burst_rules is not None and item.job_id is not None
        else [],
        "labels": labels,
        "label_names": label_names(session, labels),
        "stats": queue_stats(session, reviewer, job_id) if with_stats else None,
    }
