"""Job results as a download, shared by the API and the admin UI."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from typing import IO

from flask import Response

from service import results
from service.web.context import db_read

EXPORT_TYPES = {"csv": "text/csv", "json": "application/json"}
# Rows are written inside the transaction, then streamed from this buffer: a slow client
# must not hold a database transaction (on SQLite, the write lock) open.
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
STREAM_CHUNK_BYTES = 64 * 1024


def results_response(job_id: int, fmt: str) -> Response:
    """Every row of a job as an attachment; an unknown job is a 404 before any byte."""
    buffer = _spool_results(job_id, fmt)
    disposition = f'attachment; filename="job-{job_id}-results.{fmt}"'
    return Response(
        _stream(buffer), mimetype=EXPORT_TYPES[fmt], headers={"Content-Disposition": disposition}
    )


def _spool_results(job_id: int, fmt: str) -> IO[bytes]:
    buffer = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115
    out = io.TextIOWrapper(buffer, encoding="utf-8", newline="", write_through=True)
    try:
        with db_read() as session:
            results.write_results(session, job_id, fmt, out)
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
