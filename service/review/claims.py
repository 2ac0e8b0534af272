"""Claiming review items: the highest priority free item, held by one reviewer under a lease."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from service.db import get_or_not_found
from service.models import ReviewItem, ReviewStatus, utcnow

DEFAULT_LEASE_SECONDS = 300
# Claim attempts before giving up; a miss means another reviewer won that row just now.
CLAIM_ATTEMPTS = 20


def claimable(now: Any) -> ColumnElement[bool]:
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

    candidates = select(ReviewItem.id).where(claimable(now))
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
        # Taken only if still free; RETURNING hands back the row without another read.
        claimed = session.scalars(
            update(ReviewItem)
            .where(ReviewItem.id == item_id, claimable(now))
            .values(claimed_by=reviewer, lease_expires_at=lease)
            .returning(ReviewItem),
            execution_options={"synchronize_session": False, "populate_existing": True},
        ).one_or_none()
        if claimed is not None:
            return claimed
    return None


def get_item(session: Session, item_id: int) -> ReviewItem:
    """The review item with this id, or NotFound."""
    item = get_or_not_found(session, ReviewItem, item_id, "review item")
    return item
