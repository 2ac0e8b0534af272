"""Reviewers' decisions as annotations: decide, undo, bulk confirm, and their JSON shape."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from service.db import get_or_not_found
from service.decisions import SETTLING, current_annotation, decided_images
from service.errors import BadInput, InvalidState
from service.models import Annotation, Decision, Prediction, ReviewItem, ReviewStatus, utcnow
from service.review.claims import CLAIM_ATTEMPTS, DEFAULT_LEASE_SECONDS, claimable

MAX_LABEL_LENGTH = 200
# A skip sinks the item below every item that was never skipped (priorities lie in [0, 2]:
# venom risk adds 1, see service/routing.py).
SKIP_PENALTY = 2.0


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


def checked_decision(decision: Decision | str, label: str | None) -> tuple[Decision, str | None]:
    """A decision and its label as stored: a label with `label` only, normalised."""
    decision = Decision(decision)
    if decision == Decision.LABEL:
        return decision, normalise_label(label)
    if label is not None and label.strip():
        raise BadInput(f"a label is only given with the decision 'label', not {decision.value!r}")
    return decision, None


def decide(
    session: Session,
    item_id: int,
    reviewer: str,
    decision: Decision,
    label: str | None = None,
) -> Annotation:
    """Record a reviewer's decision on a claimed item; a skip puts it back, lower in the queue."""
    decision, label = checked_decision(decision, label)
    now = utcnow()
    may_decide = and_(
        ReviewItem.id == item_id,
        ReviewItem.status == ReviewStatus.PENDING,
        or_(ReviewItem.claimed_by == reviewer, claimable(now)),
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
    # RETURNING hands back the decided row without another read.
    decided = session.scalars(
        update(ReviewItem).where(may_decide).values(**values).returning(ReviewItem),
        execution_options={"synchronize_session": False, "populate_existing": True},
    ).one_or_none()
    if decided is None:
        item = get_or_not_found(session, ReviewItem, item_id, "review item", populate_existing=True)
        if item.status != ReviewStatus.PENDING:
            raise InvalidState(
                f"review item {item_id} was already decided", {"status": item.status.value}
            )
        raise InvalidState(
            f"review item {item_id} is claimed by another reviewer",
            {"claimed_by": item.claimed_by, "lease_expires_at": _iso(item.lease_expires_at)},
        )
    item = decided
    prediction = session.get(Prediction, item.prediction_id)
    return _record(session, item.image_id, item.id, reviewer, decision, label, prediction, now)


def undo_last(
    session: Session,
    reviewer: str,
    lease_seconds: int = DEFAULT_LEASE_SECONDS,
    *,
    job_id: int | None = None,
    annotation_id: int | None = None,
    whole_burst: bool = True,
) -> Annotation | None:
    """Undo the reviewer's latest live annotation; its item returns to the queue, claimed by them.

    Called again, it undoes the one before: one decision at a time. `job_id` keeps to one
    job's queue; `annotation_id` undoes that one annotation of the reviewer's (the photo
    on the reviewer's screen). A burst decision (one key, every photo of a burst) is
    undone whole unless `whole_burst` is False (changing one photo's answer).
    """
    scope = _annotation_scope(reviewer, job_id)
    if annotation_id is not None:
        scope.append(Annotation.id == annotation_id)
    for _ in range(CLAIM_ATTEMPTS):
        annotation = session.scalar(
            select(Annotation)
            .where(*scope, Annotation.undone_at.is_(None))
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
    lease = now + timedelta(seconds=lease_seconds)
    if annotation.review_item_id is not None:
        _reopen(session, annotation, reviewer, lease)
    if annotation.burst_lead_id is not None and whole_burst:
        _undo_burst(session, annotation, reviewer, lease)
    return annotation


def _undo_burst(session: Session, annotation: Annotation, reviewer: str, lease: Any) -> None:
    """Undo the rest of a burst decision (service/review_bursts.py) with its lead."""
    rest = session.scalars(
        update(Annotation)
        .where(
            Annotation.burst_lead_id == annotation.burst_lead_id,
            Annotation.reviewer == reviewer,
            Annotation.undone_at.is_(None),
        )
        .values(undone_at=annotation.undone_at)
        .returning(Annotation.id)
        .execution_options(synchronize_session=False)
    ).all()
    for member in session.scalars(select(Annotation).where(Annotation.id.in_(rest))):
        if member.review_item_id is not None:
            _reopen(session, member, reviewer, lease)


def _annotation_scope(reviewer: str, job_id: int | None) -> list[ColumnElement[bool]]:
    """The reviewer's annotations, only those on one job's review items when a job is given."""
    scope = [Annotation.reviewer == reviewer]
    if job_id is not None:
        in_job = select(ReviewItem.id).where(ReviewItem.job_id == job_id)
        scope.append(Annotation.review_item_id.in_(in_job))
    return scope


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


def annotate_image(
    session: Session,
    image_id: int,
    reviewer: str,
    decision: Decision | str,
    label: str | None = None,
) -> Annotation:
    """Record a reviewer's decision on an image outside the queue (a re-review of a label).

    A new annotation, as `decide` writes it (the same checks, what the machine had said from
    the image's latest prediction); nothing earlier is changed, and `undo_last` undoes it.
    A pending review item of the image is closed with it, as `confirm_many` does.
    """
    decision, label = checked_decision(decision, label)
    if decision not in SETTLING:
        raise BadInput(f"a re-review settles the label: {decision.value!r} is not a decision here")
    now = utcnow()
    prediction = session.scalar(
        select(Prediction)
        .where(Prediction.image_id == image_id)
        .order_by(Prediction.created_at.desc(), Prediction.id.desc())
        .limit(1)
    )
    item = session.scalar(
        select(ReviewItem)
        .where(ReviewItem.image_id == image_id, ReviewItem.status == ReviewStatus.PENDING)
        .order_by(ReviewItem.id)
        .limit(1)
    )
    if item is not None:
        session.execute(
            update(ReviewItem)
            .where(ReviewItem.id == item.id, ReviewItem.status == ReviewStatus.PENDING)
            .values(
                status=ReviewStatus.DONE, claimed_by=reviewer, lease_expires_at=None, decided_at=now
            )
            .execution_options(synchronize_session=False)
        )
    return _record(
        session, image_id, item.id if item is not None else None, reviewer, decision, label,
        prediction, now,
    )  # fmt: skip


def _record(
    session: Session, image_id: int, item_id: int | None, reviewer: str, decision: Decision,
    label: str | None, prediction: Prediction | None, now: datetime,
) -> Annotation:  # fmt: skip
    """Store one human decision with what the machine had said about the photo."""
    annotation = Annotation(
        image_id=image_id,
        review_item_id=item_id,
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
        "burst_lead_id": annotation.burst_lead_id,
    }


def recent_annotations(
    session: Session, reviewer: str, limit: int = 20, job_id: int | None = None
) -> list[Annotation]:
    """The reviewer's latest live annotations made in the queue (of one job), newest first."""
    return list(
        session.scalars(
            select(Annotation)
            .where(
                *_annotation_scope(reviewer, job_id),
                Annotation.undone_at.is_(None),
                Annotation.review_item_id.is_not(None),
            )
            .order_by(Annotation.created_at.desc(), Annotation.id.desc())
            .limit(limit)
        )
    )


def get_annotation(session: Session, annotation_id: int) -> Annotation:
    """The annotation with this id, or NotFound."""
    annotation = get_or_not_found(session, Annotation, annotation_id, "annotation")
    return annotation
