"""The review page's view model: an item with its image, prediction, siblings, burst, labels."""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Integer, Select, String, and_, bindparam, false, func, select, union_all
from sqlalchemy.orm import Session, aliased

from service.bursts import BurstRules, burst_members
from service.decisions import current_annotations
from service.field_facts import marks_of, photo_facts
from service.field_models import Site, Species
from service.models import (
    Annotation,
    Decision,
    Image,
    JobImage,
    ModelVersion,
    Prediction,
    ReviewItem,
    ReviewStatus,
    UTCDateTime,
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
    params: dict[str, Any] = {"now": now}
    if job_id is not None:
        params["job_id"] = job_id
    if reviewer is not None:
        params |= {"reviewer": reviewer, "since": now - timedelta(days=1)}
    statement = _stats_statement(job_id is not None, reviewer is not None)
    row = session.execute(statement, params).one()
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


@functools.cache
def _stats_statement(one_job: bool, with_reviewer: bool) -> Select[Any]:
    """queue_stats' statement, built once, with the bound parameters `now` and, as asked,
    `job_id`, `reviewer` and `since`."""
    job_id = bindparam("job_id", type_=Integer) if one_job else None
    pending, done = counted(job_id)
    leased = (
        select(func.count())
        .select_from(ReviewItem)
        .where(
            ReviewItem.status == ReviewStatus.PENDING,
            ReviewItem.claimed_by.is_not(None),
            ReviewItem.lease_expires_at > bindparam("now", type_=UTCDateTime),
        )
    )
    if job_id is not None:
        leased = leased.where(ReviewItem.job_id == job_id)
    columns = [pending, done, leased.scalar_subquery()]
    if with_reviewer:
        mine = (
            select(func.count())
            .select_from(Annotation)
            .where(
                Annotation.reviewer == bindparam("reviewer", type_=String),
                Annotation.undone_at.is_(None),
                Annotation.decision.in_(SETTLING),
                Annotation.created_at >= bindparam("since", type_=UTCDateTime),
            )
        )
        columns.append(mine.scalar_subquery())
    return select(*columns)


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
    return _names(_species(session, labels))


def _human_labels(session: Session) -> list[str]:
    """Every label of a live human decision, skipping through the label index: one probe
    per distinct label (a few hundred) instead of a read of every annotation (millions)."""
    return list(session.scalars(_human_labels_statement()))


@functools.cache
def _human_labels_statement() -> Select[Any]:
    """_human_labels' recursive statement, built once (it has no parameters)."""
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
    return select(walk.c.label).where(walk.c.label.is_not(None), live)


def describe_reason(reason: str) -> str:
    """The routing reasons in words (see service.routing)."""
    return describe_reasons(reason)


def _siblings(
    session: Session, job_id: int, rel_path: str, model_version_id: int
) -> list[tuple[int, str, str | None]]:
    """(image id, rel path, the model version's label) of the job's images in this one's
    folder, a few each side, in order."""
    params = {
        "job_id": job_id,
        "folder": folder_of(rel_path),
        "rel_path": rel_path,
        "model_version_id": model_version_id,
    }
    rows = session.execute(_siblings_statement(), params).all()
    found = ((int(i), str(path), None if label is None else str(label)) for i, path, label in rows)
    return sorted(found, key=lambda row: row[1])


@functools.cache
def _siblings_statement() -> Any:
    """_siblings' statement, built once, with the bound parameters `job_id`, `folder`,
    `rel_path` and `model_version_id`."""
    # The folder is stored with each job image: two index ranges in one statement, each
    # photo's prediction by the (image, model version) key.
    rel_path = bindparam("rel_path", type_=String)
    base = (
        select(JobImage.image_id, JobImage.rel_path, Prediction.label)
        .outerjoin(
            Prediction,
            and_(
                Prediction.image_id == JobImage.image_id,
                Prediction.model_version_id == bindparam("model_version_id", type_=Integer),
            ),
        )
        .where(
            JobImage.job_id == bindparam("job_id", type_=Integer),
            JobImage.folder == bindparam("folder", type_=String),
        )
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
    return union_all(select(before), select(after))


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
) -> tuple[Image, Prediction, ModelVersion | None, JobImage | None, Site | None]:
    """The item's image, prediction, model version, job image and site, in one statement."""
    params = {"image_id": item.image_id, "prediction_id": item.prediction_id}
    if item.job_id is not None:
        params["job_id"] = item.job_id
    # Foreign keys with cascading deletes: the image and prediction exist.
    row = session.execute(_photo_statement(item.job_id is not None), params).one()
    return row[0], row[1], row[2], row[3], row[4]


@functools.cache
def _photo_statement(in_a_job: bool) -> Any:
    """_photo's statement, built once, with the bound parameters `image_id`,
    `prediction_id` and, for an item of a job, `job_id`."""
    in_job = (
        and_(JobImage.job_id == bindparam("job_id", type_=Integer), JobImage.image_id == Image.id)
        if in_a_job
        else false()
    )
    return (
        select(Image, Prediction, ModelVersion, JobImage, Site)
        .select_from(Image)
        .join(Prediction, Prediction.id == bindparam("prediction_id", type_=Integer))
        .outerjoin(ModelVersion, ModelVersion.id == Prediction.model_version_id)
        .outerjoin(JobImage, in_job)
        .outerjoin(Site, Site.name == JobImage.site)
        .where(Image.id == bindparam("image_id", type_=Integer))
    )


def _species(session: Session, labels: Sequence[str]) -> list[Species]:
    """The species table's rows of these labels (those it has)."""
    if not labels:
        return []
    return list(session.scalars(select(Species).where(Species.label.in_(labels))))


def _names(rows: Sequence[Species]) -> dict[str, dict[str, str]]:
    """label_names of Species rows read already."""
    return {
        s.label: {"common_name": s.common_name, "scientific_name": s.scientific_name}
        for s in rows
        if s.common_name or s.scientific_name
    }


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
    image, prediction, model, job_image, site = _photo(session, item)
    rel_path = job_image.rel_path if job_image else posixpath.basename(image.path)
    in_job = item.job_id is not None
    version = prediction.model_version_id
    near = _siblings(session, item.job_id, rel_path, version) if job_image and item.job_id else []
    siblings = [(i, path) for i, path, _ in near]
    burst = (
        _burst(session, item.job_id, image.id, burst_rules)
        if burst_rules is not None and item.job_id is not None
        else []
    )
    shown = list(dict.fromkeys([image.id, *(i for i, _ in siblings), *(i for i, _ in burst)]))
    # One read each for every photo on the page: the humans' decisions, the machine's labels
    # (the siblings' came with them; only a burst's other photos need a read).
    human = current_annotations(session, shown)
    machine = {i: label for i, _, label in near if label is not None}
    machine.update(_machine_labels(session, [i for i, _ in burst if i not in machine], version))
    machine[image.id] = prediction.label
    decision = human.get(image.id)
    labels = known_labels(session, version)  # the model came with the photo: no read
    top = [str(entry[0]) for entry in prediction.topk]
    species = _species(session, sorted({*labels, *top}))  # the suggestions' marks and names
    marks = marks_of(s for s in species if s.label in top)
    named = set(labels)
    names = _names([s for s in species if s.label in named])
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
            **photo_facts(image, job_image, site),
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
        "label_names": names,
        "stats": queue_stats(session, reviewer, job_id) if with_stats else None,
    }
