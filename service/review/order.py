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

from sqlalchemy import ARRAY, Float, Integer, bindparam, func, select, update
from sqlalchemy.orm import Session

from service.decisions import human_label_counts
from service.models import Prediction, ReviewItem, ReviewStatus
from service.routing import VENOM_PRIORITY, QueueCandidate, order_priorities, queue_order

READ_BATCH = 5000


def rank_job_queue(session: Session, job_id: int, order: str) -> int:
    """Re-rank the job's pending items in `order`; returns how many were re-ranked.

    `confidence` is the order the priorities already give: nothing is rewritten.
    """
    if order == "confidence":
        return 0
    # The two highest probabilities (all any order uses) are read from the stored top-k,
    # which is best first, by the database: decoding 100k top-k lists in Python took a
    # third of the ranking's time.
    first, second = Prediction.topk[(0, 1)].as_float(), Prediction.topk[(1, 1)].as_float()
    rows = session.execute(
        select(ReviewItem.id, ReviewItem.venom_risk, Prediction.label, first, second)
        .join(Prediction, Prediction.id == ReviewItem.prediction_id)
        .where(
            ReviewItem.job_id == job_id,
            ReviewItem.status == ReviewStatus.PENDING,
            ReviewItem.priority >= 0.0,
        )
        .order_by(ReviewItem.id)
        .execution_options(yield_per=READ_BATCH)
    )
    tiers: dict[bool, list[QueueCandidate]] = {True: [], False: []}
    for item_id, venom, label, p1, p2 in rows:
        top2 = [p for p in (p1, p2) if p is not None]
        tiers[bool(venom)].append(QueueCandidate(item_id, label, top2))
    # `adaptive` looks at how many human labels each predicted label already has.
    taught = human_label_counts(session) if order == "adaptive" else None
    ids: list[int] = []
    priorities: list[float] = []
    for tier, base in ((True, VENOM_PRIORITY), (False, 0.0)):
        keys = queue_order(tiers.pop(tier), order, seed=job_id, taught=taught)
        for key, priority in order_priorities(keys).items():
            ids.append(key)
            priorities.append(base + priority)
    _set_priorities(session, ids, priorities)
    return len(ids)


def _set_priorities(session: Session, ids: list[int], priorities: list[float]) -> None:
    """priority = priorities[i] for review item ids[i]: on PostgreSQL one UPDATE over two
    arrays (100k items: an UPDATE per item took most of the ranking's time)."""
    if not ids:
        return
    if session.get_bind().dialect.name != "postgresql":
        rows = [{"id": k, "priority": p} for k, p in zip(ids, priorities, strict=True)]
        session.execute(update(ReviewItem), rows)
        return
    given = (
        func.unnest(
            bindparam("ids", ids, type_=ARRAY(Integer)),
            bindparam("priorities", priorities, type_=ARRAY(Float)),
        )
        .table_valued("id", "priority")
        .render_derived(name="given")
    )
    session.execute(
        update(ReviewItem)
        .where(ReviewItem.id == given.c.id)
        .values(priority=given.c.priority)
        .execution_options(synchronize_session=False)
    )
