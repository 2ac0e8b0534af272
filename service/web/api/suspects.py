"""Suspect labels over the API: the list a training run left, most suspect first; re-review."""

from __future__ import annotations

from datetime import datetime

from flask import url_for
from flask.typing import ResponseReturnValue
from pydantic import Field

from service import review, suspects
from service.models import Decision, Role
from service.suspects import SuspectStatus, Verdict
from service.web import MAX_DB_ID
from service.web.api import bp
from service.web.api.inputs import Body, PageQuery, page
from service.web.api.operations import Output, operation
from service.web.api.review import Annotation
from service.web.auth import current_caller, requires
from service.web.context import db_read, db_session


class SuspectQuery(PageQuery):
    run_id: int | None = Field(default=None, ge=1, le=MAX_DB_ID)
    """The training run whose suspects to list (default: the newest run that has some)."""
    status: SuspectStatus = SuspectStatus.OPEN
    """`open`: still the label the run doubted; `resolved`: re-reviewed since; `all`."""


class RereviewBody(Body):
    """A re-review of a suspect label: a new annotation on its image."""

    verdict: Verdict
    """`confirm`: the human label stands; `model`: the model's label is right; `label`: the
    species is `label`; `unknown` / `unusable`: as in review."""
    label: str | None = Field(default=None, max_length=review.MAX_LABEL_LENGTH * 2)
    """The species, with the verdict `label` only."""


class CurrentDecision(Output):
    """The image's current human decision."""

    annotation_id: int
    decision: Decision
    label: str | None
    reviewer: str
    created_at: datetime


class Suspect(Output):
    """A verified label a training run's out-of-sample prediction doubts."""

    id: int
    run_id: int
    rank: int
    """1 = most suspect (lowest out-of-sample probability of the human label)."""
    image_id: int
    path: str
    name: str
    thumbnail_url: str
    """The web UI's thumbnail (for a logged-in browser session)."""
    given_label: str
    """The human label the run doubted."""
    given_probability: float
    """Its out-of-sample probability."""
    predicted_label: str
    """The model's top-1."""
    predicted_probability: float
    split: str
    """Where the image was in the run's export: `train`, `val` or `test`."""
    method: str
    """`holdout` (the run's val/test predictions) or `kfold` (K-fold probes on train)."""
    annotation_id: int
    """The human decision doubted."""
    labelled_by: str
    labelled_at: datetime
    status: SuspectStatus
    """`resolved` once the image's current human decision is another one."""
    current: CurrentDecision | None
    created_at: datetime


class SuspectPage(Output):
    """One page of a run's suspect labels, most suspect first."""

    items: list[Suspect]
    total: int
    limit: int
    offset: int
    run_id: int | None
    """The run listed (null when no run has suspects)."""


class Rereviewed(Output):
    """The new annotation and the suspect as it now stands."""

    annotation: Annotation
    suspect: Suspect


def with_thumbnail(row: dict[str, object]) -> dict[str, object]:
    return {**row, "thumbnail_url": url_for("admin.image_thumbnail", image_id=row["image_id"])}


@bp.get("/suspects")
@requires(Role.VIEWER)
@operation(SuspectPage, query=SuspectQuery, errors=(404,))
def list_suspects(query: SuspectQuery) -> ResponseReturnValue:
    """List suspect labels, most suspect first.

    After each training run, the verified labels its out-of-sample predictions doubt
    (cleanlab's confident learning; `HERPSCORE_LABEL_ERRORS`), with the model's view.
    404 if `run_id` names no training run.
    """
    with db_read() as session:
        rows, total, run_id = suspects.list_suspects(
            session, query.run_id, query.status, query.limit, query.offset
        )
        return {**page([with_thumbnail(r) for r in rows], total, query), "run_id": run_id}


@bp.post("/suspects/<id:suspect_id>/review")
@requires(Role.REVIEWER)
@operation({201: Rereviewed}, body=RereviewBody, errors=(409,))
def rereview_suspect(suspect_id: int, body: RereviewBody) -> ResponseReturnValue:
    """Re-review a suspect label.

    Records a new annotation on the image (nothing is overwritten; `POST /review/undo`
    undoes it) and answers the suspect, now resolved. 409 if it was resolved already.
    """
    with db_session() as session:
        annotation, suspect = suspects.rereview(
            session, suspect_id, current_caller().principal, body.verdict, body.label
        )
        return {
            "annotation": review.annotation_to_dict(annotation),
            "suspect": with_thumbnail(suspect),
        }, 201
