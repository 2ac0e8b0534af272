"""The review queue over the API: claim the next item, decide, undo, queue counts.

The reviewer is the API key's name. An empty queue is `200 {"item": null, "stats": ...}`
(not 204), so a client always gets a JSON body with the counts.
"""

from __future__ import annotations

from datetime import datetime

from flask.typing import ResponseReturnValue
from pydantic import Field

from service import review
from service.models import Decision, ReviewStatus, Role
from service.web import MAX_DB_ID
from service.web.api import bp
from service.web.api.inputs import Body, Query
from service.web.api.operations import Output, operation
from service.web.auth import current_caller, requires
from service.web.context import db_read, db_session


class QueueQuery(Query):
    job_id: int | None = Field(default=None, ge=1, le=MAX_DB_ID)
    """Only the review items of this job."""


class DecisionBody(Body):
    """A reviewer's decision on a claimed item."""

    decision: Decision
    """`label`: the species is `label`; `unknown`: a usable photo whose species the
    reviewer cannot tell; `unusable`: not a usable photo; `skip`: no decision, the item
    goes back to the queue with a lower priority."""
    label: str | None = Field(default=None, max_length=review.MAX_LABEL_LENGTH * 2)
    """The species, required with `label` (any name: a correction may be a new class)."""


class ReviewStats(Output):
    """Review queue counts, over the whole queue or one job."""

    pending: int
    available: int
    """Pending items nobody holds a live claim on."""
    claimed: int
    """Pending items under another reviewer's live lease."""
    done: int
    reviewer: str | None = None
    decided_by_you_24h: int | None = None


class Annotation(Output):
    """A human decision, with what the machine had said."""

    id: int
    image_id: int
    review_item_id: int | None
    reviewer: str
    decision: Decision
    label: str | None
    machine_label: str | None
    machine_confidence: float | None
    model_version_id: int | None
    created_at: datetime
    undone_at: datetime | None
    burst_lead_id: int | None = None
    """Set when one decision covered a whole burst: the first annotation of it (undone together)."""


class ReviewImage(Output):
    id: int
    path: str
    rel_path: str
    site: str | None
    captured_at: str | None
    """Clock-corrected camera time, ISO 8601 with the UTC offset where known, none where not."""
    captured_exif: str | None
    """The raw EXIF date-time."""
    gps_lat: float | None
    gps_lon: float | None
    width: int | None
    height: int | None
    url: str | None


class RankedLabel(Output):
    rank: int
    label: str
    confidence: float
    venomous: bool
    """Medically significant, in the species table."""
    common_name: str


class ReviewPrediction(Output):
    label: str
    confidence: float
    model_version_id: int
    model_name: str | None
    topk: list[RankedLabel]


class Sibling(Output):
    """An image of the same job in the same folder."""

    image_id: int
    name: str
    rel_path: str
    current: bool
    machine_label: str | None
    human_decision: Decision | None
    human_label: str | None
    thumbnail_url: str | None


class LabelNames(Output):
    """A label's names in the species table (empty when it has none)."""

    common_name: str
    scientific_name: str


class ReviewItem(Output):
    """An item of the review queue with everything needed to decide it."""

    id: int
    status: ReviewStatus
    reason: str
    """Every routing reason that held, `; `-joined."""
    reason_text: str
    reasons: list[str]
    venom_risk: bool
    """A medically significant species is in the top-k (such items are served first)."""
    priority: float
    job_id: int | None
    claimed_by: str | None
    lease_expires_at: datetime | None
    decided_at: datetime | None
    image: ReviewImage
    prediction: ReviewPrediction
    human: Annotation | None
    """The image's current human decision, if any."""
    siblings: list[Sibling]
    """Images of the same job in the same folder, around this one."""
    burst: list[Sibling] = Field(default_factory=list)
    """The photos of this one's burst (same site, seconds apart, alike), itself included."""
    labels: list[str]
    """The model's classes plus every label reviewers have used."""
    label_names: dict[str, LabelNames]
    """Common and scientific names of those labels that the species table names."""
    stats: ReviewStats | None
    """Queue counts (null on items held ahead: the answer carries them once)."""


class ReviewNext(Output):
    """The claimed item (null if the queue is empty) and the queue counts."""

    item: ReviewItem | None
    stats: ReviewStats


class ReviewDecided(Output):
    """The recorded decision."""

    annotation: Annotation


class ReviewUndone(Output):
    """The undone decision and its reopened item (both null if nothing was left to undo)."""

    annotation: Annotation | None
    item: ReviewItem | None


@bp.get("/review/next")
@requires(Role.REVIEWER)
@operation(ReviewNext, query=QueueQuery)
def review_next(query: QueueQuery) -> ResponseReturnValue:
    """Claim the next item to review.

    Returns the caller's own live claim first (asking again gives the same item), else
    claims the highest-priority pending item nobody holds, under a lease that each call
    renews. Two callers never get the same item; an abandoned item returns to the queue
    when its lease expires. An empty queue is `200` with `item: null` (not 204), so the
    counts always come back. The reviewer is the caller's principal (`key:<id>` for a key).
    """
    reviewer = current_caller().principal
    with db_session() as session:
        item = review.next_item(session, reviewer, job_id=query.job_id)
        if item is None:
            return {"item": None, "stats": review.queue_stats(session, reviewer, query.job_id)}
        context = review.item_context(session, item, reviewer=reviewer, job_id=query.job_id)
        return {"item": context, "stats": context["stats"]}


@bp.post("/review/items/<id:item_id>/decision")
@requires(Role.REVIEWER)
@operation({201: ReviewDecided}, body=DecisionBody, errors=(409,))
def review_decide(item_id: int, body: DecisionBody) -> ResponseReturnValue:
    """Decide a claimed item.

    Only the claimant may decide, or anyone once the lease expired (409 otherwise, and 409
    if the item was already decided). The annotation records the caller, the time and what
    the machine had said. `skip` releases the item and lowers its priority.
    """
    with db_session() as session:
        annotation = review.decide(
            session, item_id, current_caller().principal, body.decision, body.label
        )
        return {"annotation": review.annotation_to_dict(annotation)}, 201


@bp.post("/review/undo")
@requires(Role.REVIEWER)
@operation(ReviewUndone)
def review_undo() -> ResponseReturnValue:
    """Undo the caller's latest decision.

    Marks the caller's latest live annotation undone and gives its item back to the caller
    (the next `GET /review/next` returns it). Called again, it undoes the decision before.
    Both fields are null when there is nothing left to undo.
    """
    reviewer = current_caller().principal
    with db_session() as session:
        annotation = review.undo_last(session, reviewer)
        if annotation is None or annotation.review_item_id is None:
            item = None
        else:
            item = review.item_context(
                session, review.get_item(session, annotation.review_item_id), reviewer=reviewer
            )
        return {
            "annotation": review.annotation_to_dict(annotation) if annotation else None,
            "item": item,
        }


@bp.get("/review/stats")
@requires(Role.VIEWER)
@operation(ReviewStats, query=QueueQuery)
def review_stats(query: QueueQuery) -> ResponseReturnValue:
    """Review queue counts.

    And how many decisions the caller made in the last 24 hours.
    """
    with db_read() as session:
        return review.queue_stats(session, current_caller().principal, query.job_id)
