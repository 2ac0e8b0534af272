"""The review page's queue helpers: items held and photos read ahead, known labels, changes."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from service import review
from service.errors import Forbidden, InvalidState
from service.labels import canonical_label
from service.models import Annotation, Decision, Prediction, ReviewItem, ReviewStatus, utcnow

READ_AHEAD = 3
AHEAD = 2  # items held for the reviewer beyond the current one


def upcoming_images(
    session: Session,
    reviewer: str,
    exclude_item_id: int | None,
    job_id: int | None = None,
    count: int = READ_AHEAD,
) -> list[int]:
    """Image ids of the items the reviewer will most likely get next (claims nothing).

    The page preloads their photos; another reviewer taking one of them first costs only
    a wasted download.
    """
    now = utcnow()
    query = select(ReviewItem.image_id).where(
        ReviewItem.status == ReviewStatus.PENDING,
        or_(
            ReviewItem.claimed_by.is_(None),
            ReviewItem.claimed_by == reviewer,
            ReviewItem.lease_expires_at.is_(None),
            ReviewItem.lease_expires_at <= now,
        ),
    )
    if exclude_item_id is not None:
        query = query.where(ReviewItem.id != exclude_item_id)
    if job_id is not None:
        query = query.where(ReviewItem.job_id == job_id)
    order = query.order_by(ReviewItem.priority.desc(), ReviewItem.id).limit(count)
    return list(session.scalars(order))


def decide_known(
    session: Session,
    item_id: int,
    reviewer: str,
    decision: Decision,
    label: str | None = None,
) -> Annotation:
    """review.decide, with a typed label that matches a known one stored as the known one."""
    if decision == Decision.LABEL and label:
        item = review.get_item(session, item_id)
        prediction = session.get(Prediction, item.prediction_id)
        known = review.known_labels(session, prediction.model_version_id if prediction else None)
        names = {
            known_label: tuple(both.values())
            for known_label, both in review.label_names(session, known).items()
        }
        label = canonical_label(label.strip(), known, names)
    return review.decide(session, item_id, reviewer, decision, label)


def change_decision(
    session: Session,
    annotation_id: int,
    reviewer: str,
    decision: Decision,
    label: str | None = None,
) -> Annotation:
    """Replace one of the reviewer's queue decisions: it is undone and a new annotation made."""
    old = review.get_annotation(session, annotation_id)
    if old.reviewer != reviewer:
        raise Forbidden("you can only change your own decisions")
    if old.undone_at is not None or old.review_item_id is None:
        raise InvalidState("this decision was already undone or changed")
    item_id = old.review_item_id
    if review.undo_last(session, reviewer, annotation_id=annotation_id, whole_burst=False) is None:
        raise InvalidState("this decision was already undone or changed")
    return decide_known(session, item_id, reviewer, decision, label)


def claim_ahead(
    session: Session,
    reviewer: str,
    current: ReviewItem,
    job_id: int | None = None,
    count: int = AHEAD,
    lease_seconds: int = review.DEFAULT_LEASE_SECONDS,
) -> list[ReviewItem]:
    """Hold the `count` items the reviewer gets after `current`, in that order, under a lease.

    The page shows the next one the moment a decision is keyed and posts the decision
    behind it. Each is leased a second shorter than the one before, so review.next_item
    (the latest lease first) hands them out in this order; other reviewers skip them
    while the lease runs, and an expired lease returns them to the queue as any claim.
    """
    now = utcnow()
    free = or_(
        ReviewItem.claimed_by.is_(None),
        ReviewItem.claimed_by == reviewer,
        ReviewItem.lease_expires_at.is_(None),
        ReviewItem.lease_expires_at <= now,
    )
    others = [ReviewItem.id != current.id]
    if job_id is not None:
        others.append(ReviewItem.job_id == job_id)
    queue_order = (ReviewItem.priority.desc(), ReviewItem.id)
    # The reviewer's own claims first (held already: few, through the leased index), then
    # the queue's order (the claim-order index; one ORDER BY over both would sort them all).
    mine = session.scalars(
        select(ReviewItem.id)
        .where(
            *others,
            ReviewItem.status == ReviewStatus.PENDING,
            ReviewItem.claimed_by.is_not(None),  # the leased index's condition
            ReviewItem.claimed_by == reviewer,
        )
        .order_by(*queue_order)
        .limit(count * 3)
    )
    unheld = session.scalars(
        select(ReviewItem.id)
        .where(*others, review.claimable(now))
        .order_by(*queue_order)
        .limit(count * 3)
    )
    candidates = list(dict.fromkeys([*mine, *unheld]))[: count * 3]
    held: list[ReviewItem] = []
    for item_id in candidates:
        if len(held) == count:
            break
        lease = now + timedelta(seconds=lease_seconds - len(held) - 1)
        taken = session.execute(
            update(ReviewItem)
            .where(ReviewItem.id == item_id, ReviewItem.status == ReviewStatus.PENDING, free)
            .values(claimed_by=reviewer, lease_expires_at=lease)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            item = session.get(ReviewItem, item_id, populate_existing=True)
            assert item is not None
            held.append(item)
    return held
