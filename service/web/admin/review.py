"""The keyboard-first review page and the small JSON endpoints its script posts to."""

from __future__ import annotations

from typing import Any

from flask import render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from pydantic import Field
from sqlalchemy.orm import Session

from service import review
from service.models import Decision, Role
from service.web import MAX_DB_ID
from service.web.admin import bp, role_required
from service.web.api.inputs import Body, Query, parse_body, parse_query
from service.web.context import db_session

RECENT = 20


class QueueQuery(Query):
    job_id: int | None = Field(default=None, ge=1, le=MAX_DB_ID)


class DecisionBody(QueueQuery, Body):
    decision: Decision
    label: str | None = Field(default=None, max_length=review.MAX_LABEL_LENGTH * 2)


class UndoBody(QueueQuery, Body):
    pass


def _image_url(image_id: int) -> str:
    return url_for("admin.image_file", image_id=image_id)


def _thumbnail_url(image_id: int) -> str:
    return url_for("admin.image_thumbnail", image_id=image_id)


def _context(session: Session, item: Any, job_id: int | None) -> dict[str, Any]:
    context = review.item_context(
        session,
        item,
        reviewer=current_user.username,
        job_id=job_id,
        image_url=_image_url,
        thumbnail_url=_thumbnail_url,
    )
    context["thumbnail_url"] = _thumbnail_url(context["image"]["id"])
    return context


def _queue_state(session: Session, job_id: int | None) -> dict[str, Any]:
    """The reviewer's current item (claimed now if needed), counts and recent decisions."""
    reviewer = current_user.username
    item = review.next_item(session, reviewer, job_id=job_id)
    return {
        "item": _context(session, item, job_id) if item else None,
        "stats": review.queue_stats(session, reviewer, job_id),
        "recent": [
            {"id": a.id, "decision": a.decision.value, "label": a.label}
            for a in review.recent_annotations(session, reviewer, RECENT)
        ],
    }


@bp.get("/review")
@role_required(Role.REVIEWER)
def review_page() -> ResponseReturnValue:
    """The page shell; its script claims and shows items through the endpoints below."""
    query = parse_query(QueueQuery)
    return render_template("review.html", job_id=query.job_id)


@bp.post("/review/next.json")
@role_required(Role.REVIEWER)
def review_next() -> ResponseReturnValue:
    """Claim (or keep) the reviewer's item; a POST because it changes who holds what."""
    body = parse_body(UndoBody)
    with db_session() as session:
        return _queue_state(session, body.job_id)


@bp.post("/review/items/<id:item_id>/decision.json")
@role_required(Role.REVIEWER)
def review_decide(item_id: int) -> ResponseReturnValue:
    """Record a decision and answer with the next item, so the page needs one round trip."""
    body = parse_body(DecisionBody)
    with db_session() as session:
        annotation = review.decide(
            session, item_id, current_user.username, body.decision, body.label
        )
        decided = review.annotation_to_dict(annotation)
    with db_session() as session:  # a fresh transaction: the decision is committed first
        return {"annotation": decided, **_queue_state(session, body.job_id)}


@bp.post("/review/undo.json")
@role_required(Role.REVIEWER)
def review_undo() -> ResponseReturnValue:
    """Undo the reviewer's latest decision; the undone item becomes the current one."""
    body = parse_body(UndoBody)
    with db_session() as session:
        annotation = review.undo_last(session, current_user.username)
        undone = review.annotation_to_dict(annotation) if annotation else None
        return {"annotation": undone, **_queue_state(session, body.job_id)}


@bp.get("/review/annotations/<id:annotation_id>.json")
@role_required(Role.REVIEWER)
def review_annotation(annotation_id: int) -> ResponseReturnValue:
    """A past decision with its item, shown read-only when the reviewer steps back."""
    job_id = parse_query(QueueQuery).job_id
    with db_session() as session:
        annotation = review.get_annotation(session, annotation_id)
        if annotation.review_item_id is None:
            item = None
        else:
            item = _context(session, review.get_item(session, annotation.review_item_id), job_id)
        return {"annotation": review.annotation_to_dict(annotation), "item": item}
