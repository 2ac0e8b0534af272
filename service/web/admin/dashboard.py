"""The dashboard: the active model, live jobs, the review backlog, recent exports and runs."""

from __future__ import annotations

from typing import Any

from flask import render_template
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from service import registry
from service.jobs import FINISHED, job_to_dict
from service.models import DatasetExport, Role, ScanJob, TrainingRun
from service.review.counters import queue_counts
from service.web.admin import bp, role_required
from service.web.context import db_read

RECENT = 5


def dashboard_summary(session: Session) -> dict[str, Any]:
    """Everything the dashboard shows, read in one transaction."""
    model = registry.active_model(session)
    live = session.scalars(
        select(ScanJob).where(ScanJob.status.not_in(FINISHED)).order_by(ScanJob.id.desc())
    )
    return {
        "model": model,
        "live_jobs": [job_to_dict(job) for job in live],
        "backlog": queue_counts(session)[0],  # a stored counter, not a count
        "exports": list(
            session.scalars(select(DatasetExport).order_by(DatasetExport.id.desc()).limit(RECENT))
        ),
        "runs": list(
            session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(RECENT))
        ),
    }


@bp.get("/")
@role_required(Role.VIEWER)
def dashboard() -> ResponseReturnValue:
    with db_read() as session:
        return render_template("dashboard.html", **dashboard_summary(session))
