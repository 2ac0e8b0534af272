"""Scan jobs: create, list, inspect, cancel, and read or export their results."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from flask import request, url_for
from flask.typing import ResponseReturnValue
from pydantic import Field, model_validator

from service import idempotency, jobs, results, tasks_client
from service.models import JobStatus, Role
from service.web import MAX_DB_ID
from service.web.api import bp
from service.web.api.inputs import MAX_OFFSET, Body, PageQuery, Query, page
from service.web.api.operations import JSON, Content, Output, Page, Sent, operation
from service.web.auth import current_caller, requires
from service.web.context import current_settings, db_read, db_session
from service.web.downloads import results_response


class JobCreate(Body):
    """What to score."""

    folder: str = Field(min_length=1, max_length=4096)
    """A folder under an allowed root (absolute, or relative to the first root); symlinks
    and `..` are resolved before the check."""
    model_id: int | None = Field(default=None, ge=1, le=MAX_DB_ID)
    """Model version to pin; default: the active one."""
    threshold: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    """Predictions below this go to review; default from settings."""
    recursive: bool = True
    extensions: list[str] | None = Field(default=None, min_length=1, max_length=50)
    """File extensions to score; default from settings."""


class JobListQuery(PageQuery):
    status: JobStatus | None = None
    """Only jobs in this status."""


class PredictionQuery(PageQuery):
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    """Rows to skip. Each skipped row is still read: for deep pages pass `after` instead."""
    after: int | None = Field(default=None, ge=1, le=MAX_DB_ID)
    """Keyset cursor: start just after this image of the job (the previous page's
    `next_after`), as fast at any depth as on the first page; `offset` still applies."""
    label: str | None = Field(default=None, min_length=1, max_length=200)
    """Only this predicted label."""
    final_label: str | None = Field(default=None, min_length=1, max_length=200)
    """Only this final label (a human's decision, else the machine's, possibly a genus)."""
    reviewed: bool | None = None
    """Only images a human has (true) or has not (false) decided."""
    site: str | None = Field(default=None, min_length=1, max_length=200)
    """Only this site (a folder level under the job's folder)."""
    min_confidence: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    max_confidence: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    needs_review: bool | None = None
    """Pending review (true) or not (false)."""
    failed: bool | None = None
    """Failed images (true) or not (false)."""

    @model_validator(mode="after")
    def _confidence_range(self) -> PredictionQuery:
        low, high = self.min_confidence, self.max_confidence
        if low is not None and high is not None and low > high:
            raise ValueError("min_confidence must not exceed max_confidence")
        return self

    def filters(self) -> results.ResultFilters:
        return results.ResultFilters(
            label=self.label,
            final_label=self.final_label,
            reviewed=self.reviewed,
            site=self.site,
            min_confidence=self.min_confidence,
            max_confidence=self.max_confidence,
            needs_review=self.needs_review,
            failed=self.failed,
        )


class ExportQuery(Query):
    format: Literal["csv", "json", "megadetector", "camtrap-dp"] = "csv"


class JobProgress(Output):
    """Counts and rates of a job's images."""

    total: int
    scored: int
    failed: int
    routed_to_review: int
    pending: int
    scan_complete: bool
    fraction_done: float
    images_per_second: float
    elapsed_seconds: float
    eta_seconds: float | None


class Job(Output):
    """A scan job with its progress."""

    id: int
    folder: str
    recursive: bool
    extensions: list[str]
    status: JobStatus
    error: str | None
    model_version_id: int
    threshold: float
    created_by: str
    """Name of the key (or user) that created it."""
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: JobProgress


class CreatedJob(Job, Sent):
    """A new job, and whether its scan was handed to the broker."""


class JobPage(Page[Job]):
    """One page of jobs, newest first."""


class TopK(Output):
    label: str
    confidence: float


class ResultRow(Output):
    """One image of a job: its final label, the machine's prediction, or why it failed."""

    image_id: int
    rel_path: str
    path: str
    sha256: str | None
    site: str | None
    """The folder level under the job's folder that names the site."""
    status: Literal["pending", "scored", "failed"]
    failure_reason: str | None
    failure_detail: str | None
    final_label: str | None
    """The latest human decision not undone, else the machine's (possibly a genus)."""
    final_source: Literal["human", "machine", "rolled_up"] | None
    human_decision: Literal["label", "unknown", "unusable"] | None
    reviewed_by: str | None
    reviewed_at: str | None
    machine_label: str | None
    machine_confidence: float | None
    label: str | None
    """The machine's label (the old name of machine_label)."""
    confidence: float | None
    top_k: list[TopK]
    venomous_in_top_k: list[str]
    needs_review: bool
    review_reason: str | None
    venom_risk: bool
    model_version_id: int
    captured_at: str | None
    """Corrected capture time, ISO 8601 with the UTC offset where known, none where not."""
    captured_exif: str | None
    """The raw EXIF date-time."""
    gps_lat: float | None
    gps_lon: float | None


class ResultPage(Page[ResultRow]):
    """One page of a job's result rows, ordered by path."""

    next_after: int | None
    """The `after` of the next page (this page's last image_id); null on the last page."""


@bp.post("/jobs")
@requires(Role.REVIEWER)
@operation(
    {
        200: Content(
            "Already created by an earlier request with this `Idempotency-Key` and body: "
            "that job as it is now (nothing is created or sent again).",
            {JSON: Job},
            {"Location": "URL of the job.", "Idempotent-Replayed": "`true`."},
        ),
        201: Content("Created and queued.", {JSON: CreatedJob}, {"Location": "URL of the job."}),
        202: Content(
            "Created; waiting for the broker, which is unreachable (the scheduler sends it).",
            {JSON: CreatedJob},
            {"Location": "URL of the job."},
        ),
    },
    body=JobCreate,
    errors=(404, 409, 422),
    headers={
        "Idempotency-Key": "Makes a retry safe: the same key and body within 24 hours "
        "answer 200 with the job already created (1-255 visible ASCII characters)."
    },
)
def create_job(body: JobCreate) -> ResponseReturnValue:
    """Create a scan job.

    Queue the scoring of every image under `folder` with one model version. The folder
    must resolve (symlinks and `..` included) under an allowed root, else 403. 404 if
    `model_id` does not exist, 409 if none is given and no model is active.

    Send an `Idempotency-Key` header (1-255 visible ASCII characters, e.g. a UUID) to make
    retries safe: the same key with the same body from the same caller within 24 hours
    answers `200` with the job the first request created, never a second job; the same
    key with a different body is `422` (`idempotency_key_reused`).
    """
    settings = current_settings()
    key = idempotency.checked_key(request.headers.get("Idempotency-Key"))
    principal = current_caller().principal
    with db_session() as session:
        if key is None:
            job = jobs.create_job(
                session,
                settings,
                body.folder,
                **body.model_dump(exclude={"folder"}, exclude_unset=True),
                created_by=principal,
            )
            created = True
        else:
            job, created = idempotency.create_job_once(
                session, settings, principal, key, body.model_dump(mode="json")
            )
        payload = jobs.job_to_dict(job)
    location = url_for("api.get_job", job_id=job.id)
    if not created:
        return payload, 200, {"Location": location, "Idempotent-Replayed": "true"}
    # The job is committed: with the broker down it waits (202, not a 500 that would only
    # make the client create it twice) and the scheduler sends it later.
    sent = tasks_client.enqueue(settings, tasks_client.SCAN_TASK, [job.id])
    return {**payload, **sent.to_dict()}, 201 if sent.queued else 202, {"Location": location}


@bp.get("/jobs")
@requires(Role.VIEWER)
@operation(JobPage, query=JobListQuery)
def list_jobs(query: JobListQuery) -> ResponseReturnValue:
    """List jobs, newest first."""
    with db_read() as session:
        found, total = jobs.list_jobs(
            session, status=query.status, limit=query.limit, offset=query.offset
        )
        return page([jobs.job_to_dict(j) for j in found], total, query)


@bp.get("/jobs/<id:job_id>")
@requires(Role.VIEWER)
@operation(Job)
def get_job(job_id: int) -> ResponseReturnValue:
    """A job with its progress."""
    with db_read() as session:
        return jobs.job_to_dict(jobs.get_job(session, job_id))


@bp.post("/jobs/<id:job_id>/cancel")
@requires(Role.REVIEWER)
@operation(Job, errors=(409,))
def cancel_job(job_id: int) -> ResponseReturnValue:
    """Cancel a job.

    Its remaining chunks are skipped. 409 if it already finished (done, failed or cancelled).
    """
    with db_session() as session:
        return jobs.job_to_dict(jobs.cancel_job(session, job_id))


@bp.get("/jobs/<id:job_id>/predictions")
@requires(Role.VIEWER)
@operation(ResultPage, query=PredictionQuery)
def list_predictions(job_id: int, query: PredictionQuery) -> ResponseReturnValue:
    """A job's results, filtered and paginated.

    Ordered by path. Deep pages: pass each answer's `next_after` as `after` (a keyset
    cursor, as fast at row 500,000 as at row 0) rather than a large `offset`.
    """
    with db_read() as session:
        rows, total = results.query_results(
            session,
            job_id,
            query.filters(),
            limit=query.limit,
            offset=query.offset,
            after=query.after,
        )
    last = rows[-1]["image_id"] if len(rows) == query.limit else None
    return {**page(rows, total, query), "next_after": last}


@bp.get("/jobs/<id:job_id>/results.csv")
@requires(Role.VIEWER)
@operation(
    {
        200: Content(
            "Every row: CSV, a JSON array, MegaDetector batch output (a JSON object) or a "
            "Camtrap DP package (zip).",
            {
                "text/csv": str,
                JSON: list[ResultRow] | dict[str, Any],
                "application/zip": bytes,
            },
        )
    },
    query=ExportQuery,
)
def export_results(job_id: int, query: ExportQuery) -> ResponseReturnValue:
    """Export every result row.

    As CSV (default), a JSON array of ResultRow (`?format=json`), MegaDetector batch output
    1.4 (`?format=megadetector`) or a Camtrap DP 1.0.2 zip (`?format=camtrap-dp`), streamed.
    """
    return results_response(job_id, query.format)
