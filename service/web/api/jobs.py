"""Scan jobs: create, list, inspect, cancel, and read or export their results."""

from __future__ import annotations

import csv
import io
import json
import logging
import tempfile
from collections.abc import Iterator
from typing import IO, Literal

from flask import Response, url_for
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

log = logging.getLogger(__name__)

# Exports are built inside the transaction, then streamed from this buffer: a slow client
# must not hold a database transaction (on SQLite, the write lock) open.
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
STREAM_CHUNK_BYTES = 64 * 1024


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
            min_confidence=self.min_confidence,
            max_confidence=self.max_confidence,
            needs_review=self.needs_review,
            failed=self.failed,
        )


class ExportQuery(Query):
    format: Literal["csv", "json"] = "csv"


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


EXPORT_TYPES = {"csv": "text/csv", "json": "application/json"}


@bp.get("/jobs/<id:job_id>/results.csv")
@requires(Role.VIEWER)
def export_results(job_id: int) -> ResponseReturnValue:
    """Every row of the job as CSV (default) or a JSON array (`?format=json`), streamed."""
    fmt = parse_query(ExportQuery).format
    buffer = _spool_results(job_id, fmt)
    disposition = f'attachment; filename="job-{job_id}-results.{fmt}"'
    return Response(
        _stream(buffer), mimetype=EXPORT_TYPES[fmt], headers={"Content-Disposition": disposition}
    )


def _spool_results(job_id: int, fmt: str) -> IO[bytes]:
    """Write every row into a spooled buffer inside one short transaction (404 before any
    byte is sent); the caller streams the buffer after the commit."""
    buffer = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115
    out = io.TextIOWrapper(buffer, encoding="utf-8", newline="", write_through=True)
    try:
        with db_read() as session:
            rows = results.iter_results(session, job_id)
            if fmt == "csv":
                writer = csv.writer(out)
                writer.writerow(results.CSV_COLUMNS)
                writer.writerows(results.to_csv_row(row) for row in rows)
            else:
                out.write("[")
                for n, row in enumerate(rows):
                    out.write(("," if n else "") + "\n" + json.dumps(row, ensure_ascii=False))
                out.write("\n]\n")
    except BaseException:
        out.close()  # closes the buffer too
        raise
    out.detach()  # keep the buffer open past the wrapper
    buffer.seek(0)
    return buffer


def _stream(buffer: IO[bytes]) -> Iterator[bytes]:
    with buffer:
        while chunk := buffer.read(STREAM_CHUNK_BYTES):
            yield chunk
