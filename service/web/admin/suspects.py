"""The suspect-label list in the UI: most suspect first, one key re-reviews (static/suspects.js)."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from pydantic import Field

from service import suspects
from service.errors import BadInput
from service.models import Role
from service.suspects import SuspectStatus, Verdict
from service.web import MAX_DB_ID
from service.web.admin import bp, role_required, safe_next_url, wants_json
from service.web.api.inputs import PageQuery, parse_query
from service.web.context import db_read, db_session

PER_PAGE = 50


class SuspectPageQuery(PageQuery):
    run_id: int | None = Field(default=None, ge=1, le=MAX_DB_ID)
    status: SuspectStatus = SuspectStatus.OPEN
    limit: int = Field(default=PER_PAGE, ge=1, le=200)


def _thumbnail(row: dict[str, object]) -> dict[str, object]:
    return {**row, "thumbnail_url": url_for("admin.image_thumbnail", image_id=row["image_id"])}


@bp.get("/suspects")
@role_required(Role.VIEWER)
def suspects_page() -> ResponseReturnValue:
    query = parse_query(SuspectPageQuery)
    with db_read() as session:
        rows, total, run_id = suspects.list_suspects(
            session, query.run_id, query.status, query.limit, query.offset
        )
    args = {"status": query.status.value} | ({"run_id": query.run_id} if query.run_id else {})
    return render_template(
        "suspects.html",
        suspects=[_thumbnail(r) for r in rows],
        total=total,
        run_id=run_id,
        status=query.status.value,
        statuses=[s.value for s in SuspectStatus],
        offset=query.offset,
        limit=query.limit,
        args=args,
    )


@bp.post("/suspects/<id:suspect_id>/review")
@role_required(Role.REVIEWER)
def rereview_suspect(suspect_id: int) -> ResponseReturnValue:
    """A re-review from the list's form (or its script, which asks for JSON)."""
    raw = request.form.get("verdict", "")
    try:
        verdict = Verdict(raw)
    except ValueError:
        raise BadInput(f"unknown verdict {raw[:40]!r}") from None
    # The form always carries the label field: it counts with the verdict `label` only.
    label = request.form.get("label") if verdict == Verdict.LABEL else None
    with db_session() as session:
        annotation, suspect = suspects.rereview(
            session, suspect_id, current_user.username, verdict, label
        )
    if wants_json():
        return {"annotation_id": annotation.id, "suspect": _thumbnail(suspect)}
    answer = annotation.label or annotation.decision.value
    flash(f"Re-reviewed {suspect['name']}: {answer}.", "success")
    back = safe_next_url(request.form.get("next"), url_for("admin.suspects_page"))
    return redirect(back, 303)
