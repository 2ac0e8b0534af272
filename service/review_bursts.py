"""One decision for a whole burst: an annotation per photo, undone together."""

from __future__ import annotations

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from service import review, review_queue
from service.bursts import BurstRules, burst_members
from service.errors import BadInput
from service.models import Annotation, Decision, Prediction, ReviewItem, ReviewStatus


def decide_burst(
    session: Session,
    item_id: int,
    reviewer: str,
    decision: Decision,
    label: str | None,
    rules: BurstRules,
) -> tuple[Annotation, int]:
    """Decide a claimed item and give every other photo of its burst the same decision.

    Returns the item's annotation and how many photos were decided in all. Each photo
    gets its own annotation (its pending review item closes with it); they share
    `burst_lead_id`, so undoing one undoes them all. Photos that already have a human
    decision, or whose review item another reviewer holds, are left alone.
    """
    if Decision(decision) == Decision.SKIP:
        raise BadInput("a skip is for one photo; it cannot be applied to a burst")
    lead = review_queue.decide_known(session, item_id, reviewer, decision, label)
    item = review.get_item(session, item_id)
    if item.job_id is None:
        return lead, 1
    others = [
        image_id
        for image_id in burst_members(session, item.job_id, item.image_id, rules)
        if image_id != item.image_id
    ]
    others = [i for i in others if i not in review.images_with_human_decision(session, others)]
    decided = [
        image_id for image_id in others if _annotate_member(session, lead, image_id, reviewer)
    ]
    if decided:
        lead.burst_lead_id = lead.id
    session.flush()
    return lead, 1 + len(decided)


def _annotate_member(session: Session, lead: Annotation, image_id: int, reviewer: str) -> bool:
    """Record the lead's decision on one more photo of the burst; False when it is held."""
    now = lead.created_at
    item = session.scalar(
        select(ReviewItem)
        .where(ReviewItem.image_id == image_id, ReviewItem.status == ReviewStatus.PENDING)
        .order_by(ReviewItem.id)
        .limit(1)
    )
    if item is not None:
        # Not while another reviewer holds it under a live lease (it may be on their screen).
        free = or_(
            ReviewItem.claimed_by.is_(None),
            ReviewItem.claimed_by == reviewer,
            ReviewItem.lease_expires_at.is_(None),
            ReviewItem.lease_expires_at <= now,
        )
        closed = session.execute(
            update(ReviewItem)
            .where(ReviewItem.id == item.id, ReviewItem.status == ReviewStatus.PENDING, free)
            .values(
                status=ReviewStatus.DONE, claimed_by=reviewer, lease_expires_at=None, decided_at=now
            )
            .execution_options(synchronize_session=False)
        )
        if closed.rowcount != 1:  # type: ignore[attr-defined]
            return False
    prediction = session.scalar(
        select(Prediction)
        .where(Prediction.image_id == image_id)
        # The lead's model version's prediction when there is one, else the latest.
        .order_by(
            (Prediction.model_version_id == lead.model_version_id).desc(), Prediction.id.desc()
        )
        .limit(1)
    )
    session.add(
        Annotation(
            image_id=image_id,
            review_item_id=item.id if item is not None else None,
            reviewer=reviewer,
            decision=lead.decision,
            label=lead.label,
            machine_label=prediction.label if prediction else None,
            machine_confidence=prediction.confidence if prediction else None,
            model_version_id=prediction.model_version_id if prediction else None,
            created_at=now,
            burst_lead_id=lead.id,
        )
    )
    return True
