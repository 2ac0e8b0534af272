"""The review queue: claiming items under a lease, recording decisions, undo, bulk confirm."""

from __future__ import annotations

import posixpath
import unicodedata
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from service.decisions import (
    SETTLING,
    current_annotation,
    current_annotations,
    decided_images,
)
from service.errors import BadInput, InvalidState, NotFound
from service.field_facts import image_facts, species_marks
from service.models import (
    Annotation,
    Decision,
    Image,
    JobImage,
    ModelVersion,
    Prediction,
    ReviewItem,
    ReviewStatus,
    utcnow,
)
from service.routing import describe_reasons

DEFAULT_LEASE_SECONDS = 300
MAX_LABEL_LENGTH = 200
# A skip sinks the item below every item that was never skipped (priorities lie in [0, 2]:
# venom risk adds 1, see service/routing.py).
SKIP_PENALTY = 2.0
SIBLINGS_EACH_SIDE = 4
# Claim attempts before giving up; a miss means another reviewer won that row just now.
CLAIM_ATTEMPTS = 20

ImageUrl = Callable[[int], str]


def _claimable(now: Any) -> ColumnElement[bool]:
    """A pending item nobody holds: never claimed, released, or its lease ran out."""
    return and_(
        ReviewItem.status == ReviewStatus.PENDING,
        or_(
            ReviewItem.claimed_by.is_(None),
            ReviewItem.lease_expires_at.is_(None),
            ReviewItem.lease_expires_at <= now,
        ),
    )


def next_item(
    session: Session,
    reviewer: str,
    lease_seconds: int = DEFAULT_LEASE_SECONDS,
    job_id: int | None = None,
) -> ReviewItem | None:
    """The reviewer's own live claim, else a newly claimed highest-priority item; None if empty.

    Claims are exclusive: on PostgreSQL the candidate row is locked with SKIP LOCKED, and on
    both databases a conditional UPDATE only takes a row that is still free.
    """
    now = utcnow()
    lease = now + timedelta(seconds=lease_seconds)
    own = select(ReviewItem).where(
        ReviewItem.status == ReviewStatus.PENDING,
        ReviewItem.claimed_by == reviewer,
        ReviewItem.lease_expires_at > now,
    )
    if job_id is not None:
        own = own.where(ReviewItem.job_id == job_id)
    # The latest claim first: an undone item (claimed last) is shown before the older one.
    mine = session.scalar(
        own.order_by(ReviewItem.lease_expires_at.desc(), ReviewItem.id.desc()).limit(1)
    )
    if mine is not None:
        mine.lease_expires_at = lease  # the reviewer is still on it: keep it theirs
        return mine

    candidates = select(ReviewItem.id).where(_claimable(now))
    if job_id is not None:
        candidates = candidates.where(ReviewItem.job_id == job_id)
    candidates = (
        candidates.order_by(ReviewItem.priority.desc(), ReviewItem.id)
        .limit(1)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite's BEGIN IMMEDIATE serialises
    )
    for _ in range(CLAIM_ATTEMPTS):
        item_id = session.scalar(candidates)
        if item_id is None:
            return None
        claimed = session.execute(
            update(ReviewItem)
            .where(ReviewItem.id == item_id, _claimable(now))
            .values(claimed_by=reviewer, lease_expires_at=lease)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            item = session.get(ReviewItem, item_id, populate_existing=True)
            assert item is not None
            return item
    return None


def normalise_label(label: str | None) -> str:
    """A label as stored: trimmed free text, 1-200 characters, no control characters."""
    text = (label or "").strip()
    if not text:
        raise BadInput("a label is required for the decision 'label'")
    if len(text) > MAX_LABEL_LENGTH:
        raise BadInput(f"a label has at most {MAX_LABEL_LENGTH} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in text):
        raise BadInput("a label must not contain control characters")
    return text


def get_item(session: Session, item_id: int) -> ReviewItem:
    """The review item with this id, or NotFound."""
    item = session.get(ReviewItem, item_id)
    if item is None:
        raise NotFound(f"review item {item_id} does not exist")
    return item


def decide(
    session: Session,
    item_id: int,
    reviewer: str,
    decision: Decision,
    label: str | None = None,
) -> Annotation:
    """Record a reviewer's decision on a claimed item; a skip puts it back, lower in the queue."""
    decision = Decision(decision)
    if decision == Decision.LABEL:
        label = normalise_label(label)
    elif label is not None and label.strip():
        raise BadInput(f"a label is only given with the decision 'label', not {decision.value!r}")
    else:
        label = None
    now = utcnow()
    may_decide = and_(
        ReviewItem.id == item_id,
        ReviewItem.status == ReviewStatus.PENDING,
        or_(ReviewItem.claimed_by == reviewer, _claimable(now)),
    )
    if decision == Decision.SKIP:
        values: dict[str, Any] = {
            "claimed_by": None,
            "lease_expires_at": None,
            "priority": ReviewItem.priority - SKIP_PENALTY,
        }
    else:
        values = {
            "status": ReviewStatus.DONE,
            "claimed_by": reviewer,
            "lease_expires_at": None,
            "decided_at": now,
        }
    changed = session.execute(
        update(ReviewItem)
        .where(may_decide)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    item = session.get(ReviewItem, item_id, populate_existing=True)
    if item is None:
        raise NotFound(f"review item {item_id} does not exist")
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        if item.status != ReviewStatus.PENDING:
            raise InvalidState(
                f"review item {item_id} was already decided", {"status": item.status.value}
            )
        raise InvalidState(
            f"review item {item_id} is claimed by another reviewer",
            {"claimed_by": item.claimed_by, "lease_expires_at": _iso(item.lease_expires_at)},
        )
    prediction = session.get(Prediction, item.prediction_id)
    annotation = Annotation(
        image_id=item.image_id,
        review_item_id=item.id,
        reviewer=reviewer,
        decision=decision,
        label=label,
        machine_label=prediction.label if prediction else None,
        machine_confidence=prediction.confidence if prediction else None,
        model_version_id=prediction.model_version_id if prediction else None,
        created_at=now,
    )
    session.add(annotation)
    session.flush()
    return annotation


def undo_last(
    session: Session, reviewer: str, lease_seconds: int = DEFAULT_LEASE_SECONDS
) -> Annotation | None:
    """Undo the reviewer's latest live annotation; its item returns to the queue, claimed by them.

    Called again, it undoes the one before: one decision at a time.
    """
    for _ in range(CLAIM_ATTEMPTS):
        annotation = session.scalar(
            select(Annotation)
            .where(Annotation.reviewer == reviewer, Annotation.undone_at.is_(None))
            .order_by(Annotation.created_at.desc(), Annotation.id.desc())
            .limit(1)
        )
        if annotation is None:
            return None
        now = utcnow()
        undone = session.execute(
            update(Annotation)
            .where(Annotation.id == annotation.id, Annotation.undone_at.is_(None))
            .values(undone_at=now)
            .execution_options(synchronize_session=False)
        )
        if undone.rowcount == 1:  # type: ignore[attr-defined]
            break
    else:
        return None
    session.refresh(annotation)
    if annotation.review_item_id is not None:
        _reopen(session, annotation, reviewer, now + timedelta(seconds=lease_seconds))
    return annotation


def _reopen(session: Session, annotation: Annotation, reviewer: str, lease: Any) -> None:
    """Put an undone annotation's item back to pending and hand it to the reviewer."""
    values: dict[str, Any] = {
        "status": ReviewStatus.PENDING,
        "claimed_by": reviewer,
        "lease_expires_at": lease,
        "decided_at": None,
    }
    if annotation.decision == Decision.SKIP:
        values["priority"] = ReviewItem.priority + SKIP_PENALTY
    # Another live decision on the same item (made since) keeps it closed.
    later = select(Annotation.id).where(
        Annotation.review_item_id == annotation.review_item_id,
        Annotation.undone_at.is_(None),
        Annotation.decision.in_(SETTLING),
    )
    # Nor does another reviewer's live claim on it (a skipped item someone took since).
    free = or_(
        ReviewItem.claimed_by.is_(None),
        ReviewItem.claimed_by == reviewer,
        ReviewItem.lease_expires_at.is_(None),
        ReviewItem.lease_expires_at <= utcnow(),
    )
    session.execute(
        update(ReviewItem)
        .where(ReviewItem.id == annotation.review_item_id, ~later.exists(), free)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def current_label(session: Session, image_id: int) -> Annotation | None:
    """The image's current human decision: its latest live label/unknown/unusable annotation."""
    return current_annotation(session, image_id)


def images_with_human_decision(session: Session, image_ids: Sequence[int]) -> set[int]:
    """Which of these images have a current human decision (which no machine may override)."""
    return decided_images(session, image_ids)


def confirm_many(session: Session, image_ids: list[int], reviewer: str) -> int:
    """Confirm the machine's top-1 label for each image; returns how many were confirmed.

    Images with a current human decision or without any prediction are left alone. The
    prediction confirmed is the one under review if the image has a pending item, else the
    image's latest prediction.
    """
    wanted = list(dict.fromkeys(image_ids))
    todo = set(wanted) - images_with_human_decision(session, wanted)
    if not todo:
        return 0
    pending = {
        item.image_id: item
        for item in session.scalars(
            select(ReviewItem)
            .where(ReviewItem.image_id.in_(todo), ReviewItem.status == ReviewStatus.PENDING)
            .order_by(ReviewItem.id)
        )
    }
    latest: dict[int, Prediction] = {}
    for found in session.scalars(
        select(Prediction)
        .where(Prediction.image_id.in_(todo))
        .order_by(Prediction.created_at, Prediction.id)
    ):
        latest[found.image_id] = found  # ascending order: the last one wins
    now = utcnow()
    confirmed = 0
    for image_id in wanted:
        if image_id not in todo:
            continue
        item = pending.get(image_id)
        pred = session.get(Prediction, item.prediction_id) if item else latest.get(image_id)
        if pred is None:
            continue
        if item is not None:
            closed = session.execute(
                update(ReviewItem)
                .where(ReviewItem.image_id == image_id, ReviewItem.status == ReviewStatus.PENDING)
                .values(
                    status=ReviewStatus.DONE,
                    claimed_by=reviewer,
                    lease_expires_at=None,
                    decided_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            if closed.rowcount == 0:  # type: ignore[attr-defined]
                continue  # decided a moment ago by someone else
        session.add(
            Annotation(
                image_id=image_id,
                review_item_id=item.id if item else None,
                reviewer=reviewer,
                decision=Decision.LABEL,
                label=pred.label,
                machine_label=pred.label,
                machine_confidence=pred.confidence,
                model_version_id=pred.model_version_id,
                created_at=now,
            )
        )
        confirmed += 1
    session.flush()
    return confirmed


def queue_stats(
    session: Session, reviewer: str | None = None, job_id: int | None = None
) -> dict[str, Any]:
    """Queue counts: pending, free to claim, held by others, done; and the reviewer's own."""
    now = utcnow()
    scope = [ReviewItem.job_id == job_id] if job_id is not None else []

    def count(*where: Any) -> int:
        return int(
            session.scalar(select(func.count()).select_from(ReviewItem).where(*scope, *where)) or 0
        )

    stats: dict[str, Any] = {
        "pending": count(ReviewItem.status == ReviewStatus.PENDING),
        "available": count(_claimable(now)),
        "claimed": count(
            ReviewItem.status == ReviewStatus.PENDING,
            ReviewItem.claimed_by.is_not(None),
            ReviewItem.lease_expires_at > now,
        ),
        "done": count(ReviewItem.status == ReviewStatus.DONE),
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
    labels.update(
        session.scalars(
            select(Annotation.label)
            .where(
                Annotation.decision == Decision.LABEL,
                Annotation.undone_at.is_(None),
                Annotation.label.is_not(None),
            )
            .distinct()
        )
    )
    return sorted(labels, key=str.casefold)


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
    folder = posixpath.dirname(rel_path)
    # substr, not LIKE: SQLite's LIKE ignores case and "_" would need escaping.
    prefix = f"{folder}/" if folder else ""
    rest = func.substr(JobImage.rel_path, len(prefix) + 1)
    same_folder = and_(
        func.substr(JobImage.rel_path, 1, len(prefix)) == prefix, ~rest.contains("/")
    )
    base = select(JobImage.image_id, JobImage.rel_path).where(
        JobImage.job_id == job_id, same_folder
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
    rows = [*reversed(before), *after]
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


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def annotation_to_dict(annotation: Annotation) -> dict[str, Any]:
    """The JSON shape of an annotation."""
    return {
        "id": annotation.id,
        "image_id": annotation.image_id,
        "review_item_id": annotation.review_item_id,
        "reviewer": annotation.reviewer,
        "decision": annotation.decision.value,
        "label": annotation.label,
        "machine_label": annotation.machine_label,
        "machine_confidence": annotation.machine_confidence,
        "model_version_id": annotation.model_version_id,
        "created_at": annotation.created_at.isoformat(),
        "undone_at": _iso(annotation.undone_at),
    }


def item_context(
    session: Session,
    item: ReviewItem,
    *,
    reviewer: str | None = None,
    job_id: int | None = None,
    image_url: ImageUrl | None = None,
    thumbnail_url: ImageUrl | None = None,
) -> dict[str, Any]:
    """Everything the review page shows for one item; URLs come from the web layer.

    `reviewer` and `job_id` scope the queue counts (the queue the reviewer is working on).
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
        "labels": known_labels(session, prediction.model_version_id),
        "stats": queue_stats(session, reviewer, job_id),
    }


def recent_annotations(session: Session, reviewer: str, limit: int = 20) -> list[Annotation]:
    """The reviewer's latest live annotations made in the queue, newest first."""
    return list(
        session.scalars(
            select(Annotation)
            .where(
                Annotation.reviewer == reviewer,
                Annotation.undone_at.is_(None),
                Annotation.review_item_id.is_not(None),
            )
            .order_by(Annotation.created_at.desc(), Annotation.id.desc())
            .limit(limit)
        )
    )


def get_annotation(session: Session, annotation_id: int) -> Annotation:
    """The annotation with this id, or NotFound."""
    annotation = session.get(Annotation, annotation_id)
    if annotation is None:
        raise NotFound(f"annotation {annotation_id} does not exist")
    return annotation
