"""The keyboard-first review page and the small JSON endpoints its script posts to."""

from __future__ import annotations

import posixpath
from typing import Any

from flask import render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from pydantic import Field
from sqlalchemy.orm import Session

from service import jobs, review, review_bursts, review_queue
from service.bursts import BurstRules
from service.errors import BadInput, NotFound
from service.models import Annotation, Decision, Image, Role
from service.web import MAX_DB_ID
from service.web.admin import bp, role_required
from service.web.api.inputs import Body, Query, parse_body, parse_query
from service.web.context import current_settings, db_session

RECENT = 12


class QueueQuery(Query):
    job_id: int | None = Field(default=None, ge=1, le=MAX_DB_ID)


class QueueBody(QueueQuery, Body):
    """Which queue: one job's, or every job's (no job_id)."""


class DecisionBody(QueueBody):
    decision: Decision
    label: str | None = Field(default=None, max_length=review.MAX_LABEL_LENGTH * 2)
    # The same decision for every photo of the item's burst (the review page's `*` key).
    burst: bool = False


class UndoBody(QueueBody):
    # The decision shown on the reviewer's screen; none: their latest in this queue.
    annotation_id: int | None = Field(default=None, ge=1, le=MAX_DB_ID)


def _image_url(image_id: int) -> str:
    return url_for("admin.image_file", image_id=image_id)


def _display_url(image_id: int) -> str:
    return url_for("admin.image_display", image_id=image_id)


def _thumbnail_url(image_id: int) -> str:
    return url_for("admin.image_thumbnail", image_id=image_id)


def _context(
    session: Session, item: Any, job_id: int | None, with_stats: bool = True
) -> dict[str, Any]:
    context = review.item_context(
        session,
        item,
        reviewer=current_user.username,
        job_id=job_id,
        image_url=_image_url,
        thumbnail_url=_thumbnail_url,
        with_stats=with_stats,
        burst_rules=BurstRules.from_settings(current_settings()),
    )
    context["thumbnail_url"] = _thumbnail_url(context["image"]["id"])
    context["image"]["display_url"] = _display_url(context["image"]["id"])
    return context


def _recent(session: Session, annotation: Annotation) -> dict[str, Any]:
    image = session.get(Image, annotation.image_id)
    return {
        "id": annotation.id,
        "decision": annotation.decision.value,
        "label": annotation.label,
        "name": posixpath.basename(image.path) if image is not None else None,
        "thumbnail_url": _thumbnail_url(annotation.image_id),
    }


def _queue_state(session: Session, job_id: int | None) -> dict[str, Any]:
    """The reviewer's current item (claimed now if needed), the items held next (the page
    shows one the moment a decision is keyed), counts, recent decisions, and the display
    photos of the items likely to come next (for the page to preload)."""
    reviewer = current_user.username
    item = review.next_item(session, reviewer, job_id=job_id)
    ahead = review_queue.claim_ahead(session, reviewer, item, job_id) if item else []
    upcoming = review_queue.upcoming_images(session, reviewer, item.id if item else None, job_id)
    return {
        "item": _context(session, item, job_id) if item else None,
        "ahead": [_context(session, a, job_id, with_stats=False) for a in ahead],
        "stats": review.queue_stats(session, reviewer, job_id),
        "recent": [
            _recent(session, a)
            for a in review.recent_annotations(session, reviewer, RECENT, job_id=job_id)
        ],
        "upcoming": [_display_url(image_id) for image_id in upcoming],
    }


def _page_job(session: Session) -> dict[str, Any] | None:
    """The job named by ?job_id=, checked with a message a person can act on."""
    raw = request.args.get("job_id", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_DB_ID:
        raise BadInput(f"“{raw[:40]}” is not a job number; open a job's queue from its page.")
    try:
        job = jobs.get_job(session, int(raw))
    except NotFound:
        raise NotFound(f"There is no job #{raw}; it may have been deleted.") from None
    return {"id": job.id, "folder": job.folder}


@bp.get("/review")
@role_required(Role.REVIEWER)
def review_page() -> ResponseReturnValue:
    """The page shell; its script claims and shows items through the endpoints below."""
    with db_session() as session:
        job = _page_job(session)
    return render_template("review.html", job=job, job_id=job["id"] if job else None)


@bp.post("/review/next.json")
@role_required(Role.REVIEWER)
def review_next() -> ResponseReturnValue:
    """Claim (or keep) the reviewer's item; a POST because it changes who holds what."""
    body = parse_body(QueueBody)
    with db_session() as session:
        return _queue_state(session, body.job_id)


@bp.post("/review/items/<id:item_id>/decision.json")
@role_required(Role.REVIEWER)
def review_decide(item_id: int) -> ResponseReturnValue:
    """Record a decision and answer with the next item, so the page needs one round trip."""
    body = parse_body(DecisionBody)
    with db_session() as session:
        if body.burst:
            annotation, count = review_bursts.decide_burst(
                session, item_id, current_user.username, body.decision, body.label,
                BurstRules.from_settings(current_settings()),
            )  # fmt: skip
        else:
            annotation, count = (
                review_queue.decide_known(
                    session, item_id, current_user.username, body.decision, body.label
                ),
                1,
            )
        decided = review.annotation_to_dict(annotation)
    with db_session() as session:  # a fresh transaction: the decision is committed first
        return {"annotation": decided, "decided": count, **_queue_state(session, body.job_id)}


@bp.post("/review/annotations/<id:annotation_id>/change.json")
@role_required(Role.REVIEWER)
def review_change(annotation_id: int) -> ResponseReturnValue:
    """Change a past decision: it is undone and a new annotation records the new one."""
    body = parse_body(DecisionBody)
    with db_session() as session:
        annotation = review_queue.change_decision(
            session, annotation_id, current_user.username, body.decision, body.label
        )
        changed = review.annotation_to_dict(annotation)
    with db_session() as session:
        return {"annotation": changed, **_queue_state(session, body.job_id)}


@bp.post("/review/undo.json")
@role_required(Role.REVIEWER)
def review_undo() -> ResponseReturnValue:
    """Undo the decision on screen (else the latest in this queue); its item becomes current."""
    body = parse_body(UndoBody)
    with db_session() as session:
        annotation = review.undo_last(
            session, current_user.username, job_id=body.job_id, annotation_id=body.annotation_id
        )
        undone = review.annotation_to_dict(annotation) if annotation else None
        return {"annotation": undone, **_queue_state(session, body.job_id)}


@bp.get("/review/annotations/<id:annotation_id>.json")
@role_required(Role.REVIEWER)
def review_annotation(annotation_id: int) -> ResponseReturnValue:
    """A past decision with its item, shown when the reviewer steps back to change it."""
    job_id = parse_query(QueueQuery).job_id
    with db_session() as session:
        annotation = review.get_annotation(session, annotation_id)
        if annotation.review_item_id is None:
            item = None
        else:
            item = _context(session, review.get_item(session, annotation.review_item_id), job_id)
        return {"annotation": review.annotation_to_dict(annotation), "item": item}
