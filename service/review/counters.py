"""The stored queue counts: pending and done review items per job, kept by triggers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BindParameter, ScalarSelect, case, func, select
from sqlalchemy.orm import Session

from service.models import ReviewCounter, ReviewItem, ReviewStatus

# The counter row of review items that belong to no job (their job was deleted).
NO_JOB = 0


def counted(
    job_id: int | BindParameter[int] | None = None,
) -> tuple[ScalarSelect[Any], ScalarSelect[Any]]:
    """The stored pending and done counts of one job, or of all, as two scalar subqueries
    (for a caller that reads them with other numbers in one statement)."""
    pending = select(func.coalesce(func.sum(ReviewCounter.pending), 0))
    done = select(func.coalesce(func.sum(ReviewCounter.done), 0))
    if job_id is not None:
        pending = pending.where(ReviewCounter.job_id == job_id)
        done = done.where(ReviewCounter.job_id == job_id)
    return pending.scalar_subquery(), done.scalar_subquery()


def queue_counts(session: Session, job_id: int | None = None) -> tuple[int, int]:
    """(pending, done) review items of one job, or of all: one row, or a sum over jobs.

    The triggers of migration 0010 keep the rows in step with review_items in the
    writer's own transaction, so this reads what a count would, without counting.
    """
    pending, done = session.execute(select(*counted(job_id))).one()
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
