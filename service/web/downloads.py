"""Downloads shared by the API and the admin UI: job results, the species table."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from typing import IO

from flask import Response

from service import formats, species
from service.web.context import db_read

EXPORT_TYPES = {fmt: mediatype for fmt, (mediatype, _) in formats.FORMATS.items()}
# Rows are written inside the transaction, then streamed from this buffer: a slow client
# must not hold a database transaction (on SQLite, the write lock) open.
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
STREAM_CHUNK_BYTES = 64 * 1024


def results_response(job_id: int, fmt: str) -> Response:
    """Every row of a job as an attachment; an unknown job is a 404 before any byte."""
    buffer = _spool_results(job_id, fmt)
    disposition = f'attachment; filename="job-{job_id}-results.{formats.FORMATS[fmt][1]}"'
    return Response(
        _stream(buffer), mimetype=EXPORT_TYPES[fmt], headers={"Content-Disposition": disposition}
    )


def _spool_results(job_id: int, fmt: str) -> IO[bytes]:
    buffer = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115
    try:
        with db_read() as session:
            formats.write_format(session, job_id, fmt, buffer)
    except BaseException:
        buffer.close()
        raise
    buffer.seek(0)
    return buffer


def _stream(buffer: IO[bytes]) -> Iterator[bytes]:
    with buffer:
        while chunk := buffer.read(STREAM_CHUNK_BYTES):
            yield chunk


def species_csv_response() -> Response:
    """The species table as a CSV attachment."""
    out = io.StringIO()
    with db_read() as session:
        species.export_csv(session, out)
    return Response(
        out.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="species.csv"'},
    )
