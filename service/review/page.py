"""The review page's view model: an item with its image, prediction, siblings, burst, labels."""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, false, func, select, union_all
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
from service.review.annotations import SETTLING, _iso, annotation_to_dict
from service.review.counters import counted
from service.routing import describe_reasons

SIBLINGS_EACH_SIDE = 4
ImageUrl = Callable[[int], str]


def queue_stats(
    session: Session, reviewer: str | None = None, job_id: int | None = None
) -> dict[str, Any]:
    """Queue counts: pending, free to claim, held by others, done; and the reviewer's own.

    One statement: pending and done are stored counters (service/review/counters.py);
    items under a live lease are few and have their own index; the reviewer's decisions
    of the last day come from their (reviewer, time) index.
    """
    now = utcnow()
    pending, done = counted(job_id)
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
    columns = [pending, done, leased.scalar_subquery()]
    if reviewer is not None:
        mine = (
            select(func.count())
            .select_from(Annotation)
            .where(
                Annotation.reviewer == reviewer,
                Annotation.undone_at.is_(None),
                Annotation.decision.in_(SETTLING),
                Annotation.created_at >= now - timedelta(days=1),
            )
        )
        columns.append(mine.scalar_subquery())
    row = session.execute(select(*columns)).one()
    stats: dict[str, Any] = {
        "pending": int(row[0]),
        "available": max(0, int(row[0]) - int(row[2])),
        "claimed": int(row[2]),
        "done": int(row[1]),
    }
    if reviewer is not None:
        stats["reviewer"] = reviewer
        stats["decided_by_you_24h"] = int(row[3])
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


def _siblings(session: Session, job_id: int, rel_path: str) -> list[tuple[int, str]]:
    """(image id, rel path) of the job's images in this one's folder, a few each side, in order."""
    # The folder is stored with each job image: two index ranges in one statement.
    base = select(JobImage.image_id, JobImage.rel_path).where(
        JobImage.job_id == job_id, JobImage.folder == folder_of(rel_path)
    )
    before = (
        base.where(JobImage.rel_path < rel_path)
        .order_by(JobImage.rel_path.desc())
        .limit(SIBLINGS_EACH_SIDE)
        .subquery()
    )
    after = (
        base.where(JobImage.rel_path >= rel_path)
        .order_by(JobImage.rel_path)
        .limit(SIBLINGS_EACH_SIDE + 1)
        .subquery()
    )
    rows = session.execute(union_all(select(before), select(after))).all()
    return sorted(((int(i), str(path)) for i, path in rows), key=lambda row: row[1])


def _burst(
    session: Session, job_id: int, image_id: int, rules: BurstRules
) -> list[tuple[int, str]]:
    """(image id, rel path) of this photo's burst, itself included, in capture order; []
    when it is alone."""
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
    return [(i, paths[i]) for i in members if i in paths]


def _strip(
    rows: Sequence[tuple[int, str]],
    rel_path: str,
    machine: dict[int, str],
    human: dict[int, Annotation],
    image_url: ImageUrl | None,
) -> list[dict[str, Any]]:
    """Thumbnails with what the machine and any human said, for (image id, rel path) rows."""
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


def _machine_labels(
    session: Session, image_ids: Sequence[int], model_version_id: int
) -> dict[int, str]:
    """The model version's top-1 label of each of these images (the thumbnails' captions)."""
    if not image_ids:
        return {}
    rows = session.execute(
        select(Prediction.image_id, Prediction.label).where(
            Prediction.image_id.in_(image_ids), Prediction.model_version_id == model_version_id
        )
    )
    return {int(image_id): str(label) for image_id, label in rows}


def _photo(
    session: Session, item: ReviewItem
) -> tuple[Image, Prediction, ModelVersion | None, JobImage | None]:
    """The item's image, prediction, model version and job image, read in one statement."""
    in_job = (
        and_(JobImage.job_id == item.job_id, JobImage.image_id == Image.id)
        if item.job_id is not None
        else false()
    )
    row = session.execute(
        select(Image, Prediction, ModelVersion, JobImage)
        .select_from(Image)
        .join(Prediction, Prediction.id == item.prediction_id)
        .outerjoin(ModelVersion, ModelVersion.id == Prediction.model_version_id)
        .outerjoin(JobImage, in_job)
        .where(Image.id == item.image_id)
    ).one()  # foreign keys with cascading deletes: the image and prediction exist
    return row[0], row[1], row[2], row[3]


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
    image, prediction, model, job_image = _photo(session, item)
    rel_path = job_image.rel_path if job_image else posixpath.basename(image.path)
    in_job = item.job_id is not None
    siblings = _siblings(session, item.job_id, rel_path) if job_image and item.job_id else []
    burst = (
        _burst(session, item.job_id, image.id, burst_rules)
        if burst_rules is not None and item.job_id is not None
        else []
    )
    shown = list(dict.fromkeys([image.id, *(i for i, _ in siblings), *(i for i, _ in burst)]))
    # One read each for every photo on the page: the humans' decisions, the machine's labels.
    human = current_annotations(session, shown)
    machine = _machine_labels(session, shown[1:], prediction.model_version_id)
    machine[image.id] = prediction.label
    decision = human.get(image.id)
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
        "siblings": _strip(siblings, rel_path, machine, human, thumbnail_url) if in_job else [],
        "burst": _strip(burst, rel_path, machine, human, thumbnail_url),
        "labels": labels,
        "label_names": label_names(session, labels),
        "stats": queue_stats(session, reviewer, job_id) if with_stats else None,
    }
