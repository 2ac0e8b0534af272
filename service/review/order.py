"""The order a finished job's review queue serves (`service.routing.queue_order`).

While a job scores, each item's priority is its own (uncertainty, plus a tier for venom
risk, see `service.routing.route_for_review`). An order that looks at the whole job (turns
across the predicted labels, a share of random picks) can only be set once the job is
done: `rank_job_queue` then rewrites the priorities of the job's pending, never-skipped
items so that `ORDER BY priority DESC, id` serves them in that order. Venom-risk items
stay above every other item (they are ranked among themselves); skipped items (priority
below 0) keep their place at the bottom.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.decisions import human_label_counts
from service.models import Prediction, ReviewItem, ReviewStatus
from service.routing import VENOM_PRIORITY, QueueCandidate, order_priorities, queue_order


def rank_job_queue(session: Session, job_id: int, order: str) -> int:
    """Re-rank the job's pending items in `order`; returns how many were re-ranked.

    `confidence` is the order the priorities already give: nothing is rewritten.
    """
    if order == "confidence":
        return 0
    rows = session.execute(
        select(ReviewItem.id, ReviewItem.venom_risk, Prediction.label, Prediction.topk)
        .join(Prediction, Prediction.id == ReviewItem.prediction_id)
        .where(
            ReviewItem.job_id == job_id,
            ReviewItem.status == ReviewStatus.PENDING,
            ReviewItem.priority >= 0.0,
        )
        .order_by(ReviewItem.id)
    ).all()
    # `adaptive` looks at how many human labels each predicted label already has.
    taught = human_label_counts(session) if order == "adaptive" else None
    updates = []
    for tier, base in ((True, VENOM_PRIORITY), (False, 0.0)):
        candidates = [
            QueueCandidate(item_id, label, sorted((float(p) for _, p in topk), reverse=True))
            for item_id, venom, label, topk in rows
            if bool(venom) is tier
        ]
        keys = queue_order(candidates, order, seed=job_id, taught=taught)
        updates += [{"id": k, "priority": base + p} for k, p in order_priorities(keys).items()]
    if updates:
        session.execute(update(ReviewItem), updates)
    return len(updates)
