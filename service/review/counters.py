"""The stored queue counts: pending and done review items per job, kept by triggers."""

from __future__ import annotations

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from service.models import ReviewCounter, ReviewItem, ReviewStatus

# The counter row of review items that belong to no job (their job was deleted).
NO_JOB = 0


def queue_counts(session: Session, job_id: int | None = None) -> tuple[int, int]:
    """(pending, done) review items of one job, or of all: one row, or a sum over jobs.

    The triggers of migration 0010 keep the rows in step with review_items in the
    writer's own transaction, so this reads what a count would, without counting.
    """
    query = select(
        func.coalesce(func.sum(ReviewCounter.pending), 0),
        func.coalesce(func.sum(ReviewCounter.done), 0),
    )
    if job_id is not None:
        query = query.where(ReviewCounter.job_id == job_id)
    pending, done = session.execute(query).one()
    return int(pending), int(done)


def stored_counts(session: Session) -> dict[int, tuple[int, int]]:
    """Every job's stored (pending, done), rows at zero left out."""
    rows = session.execute(select(ReviewCounter.job_id, ReviewCounter.pending, ReviewCounter.done))
    return {job: (int(p), int(d)) for job, p, d in rows if p or d}


def recounted(session: Session) -> dict[int, tuple[int, int]]:
    """Every job's (pending, done) counted from review_items: what stored_counts must equal."""
    job = func.coalesce(ReviewItem.job_id, NO_JOB)
    rows = session.execute(
        select(
            job,
            func.sum(case((ReviewItem.status == ReviewStatus.PENDING, 1), else_=0)),
            func.sum(case((ReviewItem.status == ReviewStatus.DONE, 1), else_=0)),
        ).group_by(job)
    )
    return {j: (int(p), int(d)) for j, p, d in rows if p or d}
