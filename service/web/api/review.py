"""The review queue over the API: claim the next item, decide, undo, queue counts.

The reviewer is the API key's name. An empty queue is `200 {"item": null, "stats": ...}`
(not 204), so a client always gets a JSON body with the counts.
"""

from __future__ import annotations

from flask.typing import ResponseReturnValue
from pydantic import Field

from service import review
from service.models import Decision, Role
from service.web import MAX_DB_ID
from service.web.api import bp
from service.web.api.inputs import Body, Query, parse_body, parse_query
from service.web.auth import current_caller, requires
from service.web.context import db_session


class QueueQuery(Query):
    job_id: int | None = Field(default=None, ge=1, le=MAX_DB_ID)


class DecisionBody(Body):
    decision: Decision
    label: str | None = Field(default=None, max_length=review.MAX_LABEL_LENGTH * 2)


@bp.get("/review/next")
@requires(Role.REVIEWER)
def review_next() -> ResponseReturnValue:
    """Claim the next item (or return the caller's current claim) with its context."""
    query = parse_query(QueueQuery)
    reviewer = current_caller().principal
    with db_session() as session:
        item = review.next_item(session, reviewer, job_id=query.job_id)
        if item is None:
            return {"item": None, "stats": review.queue_stats(session, reviewer, query.job_id)}
        context = review.item_context(session, item, reviewer=reviewer, job_id=query.job_id)
        return {"item": context, "stats": context["stats"]}


@bp.post("/review/items/<id:item_id>/decision")
@requires(Role.REVIEWER)
def review_decide(item_id: int) -> ResponseReturnValue:
    """Record a decision on a claimed item; 409 if it is decided or another reviewer holds it."""
    body = parse_body(DecisionBody)
    with db_session() as session:
        annotation = review.decide(
            session, item_id, current_caller().principal, body.decision, body.label
        )
        return {"annotation": review.annotation_to_dict(annotation)}, 201


@bp.post("/review/undo")
@requires(Role.REVIEWER)
def review_undo() -> ResponseReturnValue:
    """Undo the caller's latest decision; its item is theirs again (`null` if nothing to undo)."""
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
def review_stats() -> ResponseReturnValue:
    """Queue counts, and how many decisions the caller made in the last 24 hours."""
    query = parse_query(QueueQuery)
    with db_session() as session:
        return review.queue_stats(session, current_caller().principal, query.job_id)
