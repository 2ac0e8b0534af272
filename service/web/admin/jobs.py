"""Scan jobs in the UI: list, start on an allowed folder, watch, browse, filter, export, cancel."""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from pydantic import ValidationError
from wtforms import BooleanField, FloatField, SelectField, StringField
from wtforms.validators import (
    InputRequired,
    Length,
    NumberRange,
    Optional,
)
from wtforms.validators import (
    ValidationError as FieldError,
)

from service import jobs, results, review, tasks_client
from service.errors import BadInput, HerpscoreError
from service.models import JobStatus, Role
from service.web import MAX_DB_ID
from service.web.admin import (
    bp,
    describe_problems,
    flash_enqueued,
    role_required,
    safe_next_url,
)
from service.web.api.inputs import validation_details
from service.web.api.jobs import PredictionQuery
from service.web.context import current_settings, db_read, db_session
from service.web.downloads import results_response

JOBS_PER_PAGE = 25
IMAGES_PER_PAGE = 48
MAX_CONFIRM = 1000
STATUSES = [s.value for s in JobStatus]


# ---------------------------------------------------------------- list and start


@bp.get("/jobs")
@role_required(Role.VIEWER)
def list_jobs() -> ResponseReturnValue:
    offset = request.args.get("offset", 0, type=int)
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadInput(f"unknown job status {status!r}")
    with db_read() as session:
        found, total = jobs.list_jobs(
            session,
            status=JobStatus(status) if status else None,
            limit=JOBS_PER_PAGE,
            offset=max(offset, 0),
        )
        rows = [jobs.job_to_dict(job) for job in found]
    return render_template(
        "jobs/list.html",
        jobs=rows,
        total=total,
        offset=max(offset, 0),
        limit=JOBS_PER_PAGE,
        status=status,
        statuses=STATUSES,
    )


class NewJobForm(FlaskForm):
    root = SelectField("Allowed root", validators=[InputRequired()])
    subfolder = StringField(
        "Subfolder", validators=[Optional(), Length(max=4096)], description="relative to the root"
    )
    threshold = FloatField(
        "Review threshold", validators=[Optional(), NumberRange(min=0.0, max=1.0)]
    )
    recursive = BooleanField("Include subfolders", default=True)

    def validate_subfolder(self, field: StringField) -> None:
        value = (field.data or "").strip()
        if "\x00" in value or PurePath(value).is_absolute():
            raise FieldError("give a folder relative to the chosen root")

    def folder(self, roots: list[Path]) -> str:
        """The absolute folder the form names (create_job checks it lies under a root)."""
        return str(roots[int(self.root.data or 0)] / (self.subfolder.data or "").strip())


def _new_job_form() -> tuple[NewJobForm, list[Path]]:
    roots = current_settings().resolved_roots
    form = NewJobForm()
    form.root.choices = [(str(i), str(root)) for i, root in enumerate(roots)]
    if request.method == "GET" and form.threshold.data is None:
        form.threshold.data = current_settings().review_threshold
    return form, roots


@bp.route("/jobs/new", methods=["GET", "POST"])
@role_required(Role.REVIEWER)
def new_job() -> ResponseReturnValue:
    """The form; on a valid post, record the job, commit, then queue its scan."""
    form, roots = _new_job_form()
    if not form.validate_on_submit():
        return render_template("jobs/new.html", form=form, roots=roots), 400 if form.errors else 200
    settings = current_settings()
    try:
        with db_session() as session:
            job = jobs.create_job(
                session,
                settings,
                form.folder(roots),
                threshold=form.threshold.data,
                recursive=form.recursive.data,
                created_by=current_user.username,
            )
    except HerpscoreError as exc:
        flash(exc.message, "error")
        return render_template("jobs/new.html", form=form, roots=roots), exc.http_status
    flash_enqueued(tasks_client.enqueue(settings, tasks_client.SCAN_TASK, [job.id]), job.folder)
    return redirect(url_for("admin.job_page", job_id=job.id), 303)


# ---------------------------------------------------------------- one job


def _result_query() -> tuple[PredictionQuery, bool]:
    """The contact sheet's filters from the query string (empty form fields mean "any"), and
    whether they were valid (if not: no filters, and a message saying what was wrong)."""
    args: dict[str, Any] = {k: v for k, v in request.args.items() if v.strip()}
    args["limit"] = IMAGES_PER_PAGE
    try:
        return PredictionQuery.model_validate(args), True
    except ValidationError as exc:
        # The page still shows, unfiltered, with what was wrong beside the filters.
        flash(f"Filters not applied: {describe_problems(validation_details(exc))}", "error")
        return PredictionQuery.model_validate({"limit": IMAGES_PER_PAGE}), False


@bp.get("/jobs/<id:job_id>")
@role_required(Role.VIEWER)
def job_page(job_id: int) -> ResponseReturnValue:
    query, valid = _result_query()
    with db_read() as session:
        job = jobs.get_job(session, job_id)
        rows, total = results.query_results(
            session, job_id, query.filters(), limit=query.limit, offset=query.offset
        )
        labels = job.model_version.labels
        sites = results.job_sites(session, job_id)
        model_name = job.model_version.name
        job_dict = jobs.job_to_dict(job)
    filters = query.model_dump(exclude={"limit", "offset", "after"}, exclude_none=True)
    return render_template(
        "jobs/show.html",
        job=job_dict,
        model_name=model_name,
        finished=JobStatus(job_dict["status"]) in jobs.FINISHED,
        rows=rows,
        total=total,
        offset=query.offset,
        limit=query.limit,
        labels=labels,
        sites=sites,
        filters=filters,
    ), (200 if valid else 400)


@bp.get("/jobs/<id:job_id>/progress.json")
@role_required(Role.VIEWER)
def job_progress(job_id: int) -> ResponseReturnValue:
    """The job's JSON, polled by jobs.js for live progress."""
    with db_read() as session:
        body = jobs.job_to_dict(jobs.get_job(session, job_id))
    return body, 200, {"Cache-Control": "no-store"}


@bp.get("/jobs/<id:job_id>/results.<any(csv, json, megadetector, 'camtrap-dp'):fmt>")
@role_required(Role.VIEWER)
def download_results(job_id: int, fmt: str) -> ResponseReturnValue:
    """Every row of the job, as the API exports it."""
    return results_response(job_id, fmt)


@bp.post("/jobs/<id:job_id>/cancel")
@role_required(Role.REVIEWER)
def cancel_job(job_id: int) -> ResponseReturnValue:
    with db_session() as session:
        jobs.cancel_job(session, job_id)
    flash(f"Job #{job_id} is cancelled.", "success")
    return redirect(url_for("admin.job_page", job_id=job_id), 303)


def _posted_image_ids() -> list[int]:
    raw = request.form.getlist("image_ids")
    if not raw:
        raise BadInput("select at least one image")
    if len(raw) > MAX_CONFIRM:
        raise BadInput(f"select at most {MAX_CONFIRM} images at once")
    try:
        ids = sorted({int(value) for value in raw})
    except ValueError:
        raise BadInput("image ids must be numbers") from None
    if ids[0] < 1 or ids[-1] > MAX_DB_ID:
        raise BadInput("image ids must be positive")
    return ids


@bp.post("/jobs/<id:job_id>/confirm")
@role_required(Role.REVIEWER)
def confirm_selected(job_id: int) -> ResponseReturnValue:
    """Confirm the machine's label on the selected images (one annotation each)."""
    image_ids = _posted_image_ids()
    with db_session() as session:
        jobs.get_job(session, job_id)
        jobs.require_job_images(session, job_id, image_ids)
        confirmed = review.confirm_many(session, image_ids, reviewer=current_user.username)
    flash(f"Confirmed {confirmed} of {len(image_ids)} selected images.", "success")
    back = safe_next_url(request.form.get("back"), url_for("admin.job_page", job_id=job_id))
    return redirect(back, 303)
