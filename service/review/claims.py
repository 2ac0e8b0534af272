"""Claiming review items: the highest priority free item, held by one reviewer under a lease."""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, String, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from service.db import get_or_not_found
from service.models import ReviewItem, ReviewStatus, UTCDateTime, utcnow

DEFAULT_LEASE_SECONDS = 300
# Claim attempts before giving up; a miss means another reviewer won that row just now.
CLAIM_ATTEMPTS = 20


def claimable(now: Any, items: Any = ReviewItem) -> ColumnElement[bool]:
    """A pending item nobody holds: never claimed, released, or its lease ran out. `items`
    may be an alias of ReviewItem (a subquery inside an UPDATE of the table)."""
    return and_(
        items.status == ReviewStatus.PENDING,
        or_(
            items.claimed_by.is_(None),
            items.lease_expires_at.is_(None),
            items.lease_expires_at <= now,
        ),
    )


def next_item(
    session: Session,
    reviewer: str,
    lease_seconds: int = DEFAULT_LEASE_SECONDS,
    job_id: int | None = None,
) -> ReviewItem | None:
    """The reviewer's own live claim, else a newly claimed highest-priority item; None if empty.

    One statement: an UPDATE of the reviewer's latest live claim, else of the queue's first
    free item, that renews or sets the lease and returns the row. Claims are exclusive: on
    PostgreSQL the free candidate is locked with SKIP LOCKED (a row another claim holds is
    passed over), SQLite's BEGIN IMMEDIATE serialises writers, and the UPDATE only takes a
    row that is still the reviewer's or free.
    """
    now = utcnow()
    params = {"reviewer": reviewer, "now": now, "lease": now + timedelta(seconds=lease_seconds)}
    if job_id is not None:
        params["queue_job_id"] = job_id
    for _ in range(CLAIM_ATTEMPTS):
        claimed = session.scalars(
            _claim_statement(job_id is not None),
            params,
            execution_options={"synchronize_session": False, "populate_existing": True},
        ).one_or_none()
        if claimed is not None:
            return claimed
        # Nothing taken: the queue is empty, or (rarely) the row picked was taken between
        # the pick and the UPDATE's re-check; only the second is worth another try.
        free = select(ReviewItem.id).where(claimable(now))
        if job_id is not None:
            free = free.where(ReviewItem.job_id == job_id)
        if session.scalar(free.limit(1)) is None:
            return None
    return None


@functools.cache
def _claim_statement(one_job: bool) -> Any:
    """next_item's UPDATE, built once (building it cost more than running it), with the
    bound parameters `reviewer`, `now`, `lease` and, for one job, `queue_job_id` (an
    UPDATE may not bind a column's own name)."""
    reviewer, now = bindparam("reviewer", type_=String), bindparam("now", type_=UTCDateTime)
    # Aliases: subqueries over review_items inside an UPDATE of it must not correlate to it.
    own, free = aliased(ReviewItem), aliased(ReviewItem)
    mine = select(own.id).where(
        own.status == ReviewStatus.PENDING,
        own.claimed_by == reviewer,
        own.lease_expires_at > now,
    )
    candidate = select(free.id).where(claimable(now, free))
    if one_job:
        mine = mine.where(own.job_id == bindparam("queue_job_id"))
        candidate = candidate.where(free.job_id == bindparam("queue_job_id"))
    # The latest claim first: an undone item (claimed last) is shown before the older one.
    mine = mine.order_by(own.lease_expires_at.desc(), own.id.desc()).limit(1)
    candidate = (
        candidate.order_by(free.priority.desc(), free.id)
        .limit(1)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite's BEGIN IMMEDIATE serialises
    )
    # COALESCE stops at the first non-null: with a live claim, no free row is looked at.
    target = func.coalesce(mine.scalar_subquery(), candidate.scalar_subquery())
    still_mine = and_(ReviewItem.claimed_by == reviewer, ReviewItem.lease_expires_at > now)
    return (
        update(ReviewItem)
        .where(
            ReviewItem.id == target,
            ReviewItem.status == ReviewStatus.PENDING,
            or_(still_mine, claimable(now)),
        )
        .values(claimed_by=reviewer, lease_expires_at=bindparam("lease", type_=UTCDateTime))
        .returning(ReviewItem)
    )


def get_item(session: Session, item_id: int) -> ReviewItem:
    """The review item with this id, or NotFound."""
    item = get_or_not_found(session, ReviewItem, item_id, "review item")
    return item
