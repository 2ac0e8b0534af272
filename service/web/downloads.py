"""Downloads shared by the API and the admin UI: job results, the species table."""

from __future__ import annotations

import io
from collections.abc import Generator, Iterator

from flask import Response

from service import formats, species
from service.db import read_scope
from service.web.context import current_settings, db_read

EXPORT_TYPES = {fmt: mediatype for fmt, (mediatype, _) in formats.FORMATS.items()}


def results_response(job_id: int, fmt: str) -> Response:
    """Every row of a job as an attachment, streamed as it is read (a million rows start at
    once and never sit in memory or a file); an unknown job is a 404 before any byte."""
    chunks = _stream(current_settings().db_url, job_id, fmt)
    first = next(chunks)  # the lookups and checks run here: their errors are 4xx answers
    disposition = f'attachment; filename="job-{job_id}-results.{formats.FORMATS[fmt][1]}"'
    return Response(
        _after(first, chunks),
        mimetype=EXPORT_TYPES[fmt],
        headers={"Content-Disposition": disposition},
    )


def _after(first: bytes, rest: Generator[bytes]) -> Iterator[bytes]:
    try:
        yield first
        yield from rest
    finally:
        rest.close()  # ends the transaction even when the client left before the end


def _stream(url: str, job_id: int, fmt: str) -> Generator[bytes]:
    # One read transaction for the whole download (a consistent snapshot); it ends when the
    # last chunk is sent or the client goes away (Werkzeug closes the iterator).
    with read_scope(url, custom_plans=True) as session:
        yield from formats.stream_format(session, job_id, fmt)


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
