"""Scan jobs: create, list, inspect, cancel, and read or export their results."""

from __future__ import annotations

import logging
from typing import Literal

from flask import url_for
from flask.typing import ResponseReturnValue
from kombu.exceptions import OperationalError as BrokerUnavailable
from pydantic import Field, model_validator

from service import jobs, results, tasks_client
from service.models import JobStatus, Role
from service.web import MAX_DB_ID
from service.web.api import bp
from service.web.api.inputs import Body, PageQuery, Query, page, parse_body, parse_query
from service.web.auth import current_caller, requires
from service.web.context import current_settings, db_read, db_session
from service.web.downloads import results_response

log = logging.getLogger(__name__)


class JobCreate(Body):
    folder: str = Field(min_length=1, max_length=4096)
    model_id: int | None = Field(default=None, ge=1, le=MAX_DB_ID)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    recursive: bool = True
    extensions: list[str] | None = Field(default=None, min_length=1, max_length=50)


class JobListQuery(PageQuery):
    status: JobStatus | None = None


class PredictionQuery(PageQuery):
    label: str | None = Field(default=None, min_length=1, max_length=200)
    final_label: str | None = Field(default=None, min_length=1, max_length=200)
    reviewed: bool | None = None
    site: str | None = Field(default=None, min_length=1, max_length=200)
    min_confidence: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    max_confidence: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    needs_review: bool | None = None
    failed: bool | None = None

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


@bp.post("/jobs")
@requires(Role.REVIEWER)
def create_job() -> ResponseReturnValue:
    """Record a queued job, then (after the commit) hand it to the scan queue."""
    body = parse_body(JobCreate)
    settings = current_settings()
    with db_session() as session:
        job = jobs.create_job(
            session,
            settings,
            body.folder,
            **body.model_dump(exclude={"folder"}, exclude_unset=True),
            created_by=current_caller().name,
        )
        payload = jobs.job_to_dict(job)
    try:
        tasks_client.enqueue_scan(settings, job.id)
    except BrokerUnavailable as exc:
        # The job is committed: the periodic requeue_stalled check sends it later, and a
        # 500 here would only make the client create it twice.
        log.warning("job %s created but not queued yet (broker unavailable: %s)", job.id, exc)
    return payload, 201, {"Location": url_for("api.get_job", job_id=job.id)}


@bp.get("/jobs")
@requires(Role.VIEWER)
def list_jobs() -> ResponseReturnValue:
    query = parse_query(JobListQuery)
    with db_read() as session:
        found, total = jobs.list_jobs(
            session, status=query.status, limit=query.limit, offset=query.offset
        )
        return page([jobs.job_to_dict(j) for j in found], total, query)


@bp.get("/jobs/<id:job_id>")
@requires(Role.VIEWER)
def get_job(job_id: int) -> ResponseReturnValue:
    with db_read() as session:
        return jobs.job_to_dict(jobs.get_job(session, job_id))


@bp.post("/jobs/<id:job_id>/cancel")
@requires(Role.REVIEWER)
def cancel_job(job_id: int) -> ResponseReturnValue:
    """Stop a job; 409 if it already finished."""
    with db_session() as session:
        return jobs.job_to_dict(jobs.cancel_job(session, job_id))


@bp.get("/jobs/<id:job_id>/predictions")
@requires(Role.VIEWER)
def list_predictions(job_id: int) -> ResponseReturnValue:
    query = parse_query(PredictionQuery)
    with db_read() as session:
        rows, total = results.query_results(
            session, job_id, query.filters(), limit=query.limit, offset=query.offset
        )
    return page(rows, total, query)


@bp.get("/jobs/<id:job_id>/results.csv")
@requires(Role.VIEWER)
def export_results(job_id: int) -> ResponseReturnValue:
    """Every row of the job as CSV (default) or a JSON array (`?format=json`), streamed."""
    return results_response(job_id, parse_query(ExportQuery).format)
