"""A job's results: filtered, paginated rows and CSV/JSON export."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO, cast

from sqlalchemy import ColumnElement, Select, and_, func, select, tuple_
from sqlalchemy.orm import Session, aliased, lazyload

from service.db import in_values
from service.decisions import current_decisions, final_label, final_label_sql
from service.errors import BadInput
from service.jobs import get_job
from service.models import Image, JobImage, JobImageStatus, Prediction, ReviewItem, ReviewStatus
from service.sites import SiteTime, image_capture, site_times
from service.species import venomous_labels

CSV_COLUMNS = [
    "image_id",
    "rel_path",
    "path",
    "sha256",
    "site",
    "status",
    "failure_reason",
    "final_label",
    "final_source",
    "human_decision",
    "reviewed_by",
    "reviewed_at",
    "machine_label",
    "machine_confidence",
    "top_k",
    "venomous_in_top_k",
    "needs_review",
    "review_reason",
    "model_version_id",
    "captured_at",
    "captured_exif",
    "gps_lat",
    "gps_lon",
]


@dataclass(frozen=True)
class ResultFilters:
    """Filters on a job's rows; None means "any"."""

    label: str | None = None  # the machine's top-1
    final_label: str | None = None
    reviewed: bool | None = None  # a current human decision exists
    site: str | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None
    needs_review: bool | None = None
    failed: bool | None = None


Row = tuple[JobImage, Image, Prediction | None, ReviewItem | None, Any, Any, Any, Any]


def _query(
    job_id: int,
    model_version_id: int,
    filters: ResultFilters,
    decisions_of: Select[Any] | list[int] | None = None,
) -> Select[Any]:
    """Every column of a result row; human decisions are ranked over `decisions_of` (image
    ids), by default over this job's images only, not every annotation ever made."""
    if decisions_of is None:
        decisions_of = _job_images(job_id)
    decided = current_decisions(decisions_of).subquery()
    query = (
        select(
            JobImage, Image, Prediction, ReviewItem, decided.c.decision, decided.c.label,
            decided.c.reviewer, decided.c.created_at,
        )
        .join(Image, Image.id == JobImage.image_id)
        .outerjoin(Prediction, _prediction_of(model_version_id))
        .outerjoin(ReviewItem, ReviewItem.prediction_id == Prediction.id)
        .outerjoin(decided, decided.c.image_id == JobImage.image_id)
        .where(JobImage.job_id == job_id)
        .options(lazyload(JobImage.image))  # Image is selected already: no second join
    )  # fmt: skip
    return _filtered(query, filters, decided)


def _prediction_of(model_version_id: int) -> ColumnElement[bool]:
    return and_(
        Prediction.image_id == JobImage.image_id, Prediction.model_version_id == model_version_id
    )


def _job_images(job_id: int) -> Select[Any]:
    """The image ids of a job."""
    return cast(Select[Any], select(JobImage.image_id).where(JobImage.job_id == job_id))


def _page_query(job_id: int, model_version_id: int, filters: ResultFilters) -> Select[Any]:
    """Which job images match: joins only what the filters use, so a page (and its count)
    reads a page of an index, not the whole job, and never the columns of the rows it skips.
    A filter on human decisions ranks the decisions of the job's images."""
    query = _job_images(job_id)
    decided = None
    if filters.final_label is not None or filters.reviewed is not None:
        decided = current_decisions(_job_images(job_id)).subquery()
        query = query.outerjoin(decided, decided.c.image_id == JobImage.image_id)
    by_prediction = (filters.label, filters.min_confidence, filters.max_confidence,
                     filters.final_label, filters.needs_review)  # fmt: skip
    if any(value is not None for value in by_prediction):
        query = query.outerjoin(Prediction, _prediction_of(model_version_id))
    if filters.needs_review is not None:
        query = query.outerjoin(ReviewItem, ReviewItem.prediction_id == Prediction.id)
    return _filtered(query, filters, decided)


def _filtered(query: Select[Any], filters: ResultFilters, decided: Any) -> Select[Any]:
    if filters.label is not None:
        query = query.where(Prediction.label == filters.label)
    if filters.final_label is not None:
        query = query.where(final_label_sql(decided) == filters.final_label)
    if filters.reviewed is True:
        query = query.where(decided.c.image_id.is_not(None))
    elif filters.reviewed is False:
        query = query.where(decided.c.image_id.is_(None))
    if filters.site is not None:
        query = query.where(JobImage.site == filters.site)
    if filters.min_confidence is not None:
        query = query.where(Prediction.confidence >= filters.min_confidence)
    if filters.max_confidence is not None:
        query = query.where(Prediction.confidence <= filters.max_confidence)
    if filters.needs_review is True:
        query = query.where(ReviewItem.status == ReviewStatus.PENDING)
    elif filters.needs_review is False:
        query = query.where((ReviewItem.id.is_(None)) | (ReviewItem.status != ReviewStatus.PENDING))
    if filters.failed is True:
        query = query.where(JobImage.status == JobImageStatus.FAILED)
    elif filters.failed is False:
        query = query.where(JobImage.status != JobImageStatus.FAILED)
    return query


@dataclass(frozen=True)
class RowContext:
    """What every row of one job needs besides its own columns (read once per export)."""

    model_version_id: int
    sites: dict[str, SiteTime]
    venomous: frozenset[str]


def _context(session: Session, model_version_id: int) -> RowContext:
    return RowContext(model_version_id, site_times(session), venomous_labels(session))


def _row(row: Row, ctx: RowContext) -> dict[str, Any]:
    ji, image, pred, review, decision, human_label, reviewer, decided_at = row
    final = final_label(
        decision, human_label, reviewer, decided_at,
        pred.label if pred else None, pred.rolled_up_label if pred else None,
    )  # fmt: skip
    top_k = [{"label": t[0], "confidence": t[1]} for t in pred.topk] if pred else []
    site = ctx.sites.get(ji.site or "")
    return {
        "image_id": image.id,
        "rel_path": ji.rel_path,
        "path": image.path,
        "sha256": image.sha256,
        "site": ji.site,
        "status": ji.status.value,
        "failure_reason": ji.failure_reason,
        "failure_detail": ji.failure_detail,
        "final_label": final.label,
        "final_source": final.source.value if final.source else None,
        "human_decision": final.decision,
        "reviewed_by": final.reviewed_by,
        "reviewed_at": final.reviewed_at.isoformat() if final.reviewed_at else None,
        "machine_label": pred.label if pred else None,
        "machine_confidence": round(pred.confidence, 6) if pred else None,
        # The machine's label under its old names, kept for API clients.
        "label": pred.label if pred else None,
        "confidence": round(pred.confidence, 6) if pred else None,
        "top_k": top_k,
        "venomous_in_top_k": [t["label"] for t in top_k if t["label"] in ctx.venomous],
        "needs_review": review is not None and review.status == ReviewStatus.PENDING,
        "review_reason": review.reason if review else None,
        "venom_risk": bool(review and review.venom_risk),
        "model_version_id": ctx.model_version_id,
        "captured_at": image_capture(image, site),
        "captured_exif": image.exif_datetime_raw,
        "gps_lat": image.gps_lat,
        "gps_lon": image.gps_lon,
    }


def query_results(
    session: Session,
    job_id: int,
    filters: ResultFilters,
    limit: int = 100,
    offset: int = 0,
    after: int | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """One page of a job's rows (ordered by path) and the filtered total.

    `after` (an image id of this job: the last row of the previous page) starts the page
    just after that row, whatever its depth, instead of skipping `offset` rows.
    """
    job = get_job(session, job_id)
    matching = _page_query(job_id, job.model_version_id, filters)
    if after is not None:
        matching = matching.where(_after(session, job_id, after))
    # An unfiltered total was counted by the scan: no need to count the rows again.
    known = job.total if filters == ResultFilters() and job.scan_complete else None
    ids, total = _page_ids(session, matching, filters, limit, offset, known)
    if not ids:
        return [], total
    rows = _query(job_id, job.model_version_id, ResultFilters(), decisions_of=ids)
    page = session.execute(
        rows.where(in_values(session, JobImage.image_id, ids)).order_by(
            JobImage.rel_path, JobImage.id
        )
    ).all()
    ctx = _context(session, job.model_version_id)
    return [_row(tuple(r), ctx) for r in page], total


def _page_ids(
    session: Session,
    matching: Select[Any],
    filters: ResultFilters,
    limit: int,
    offset: int,
    total: int | None,
) -> tuple[list[int], int]:
    """A page of `matching` image ids in path order, and how many match (unless `total`).

    Filtered by label, site, failure or human decisions, the matches are found first (from
    the label's predictions, the site's or status's index, the job's ranked decisions),
    then counted and sorted in one statement. PostgreSQL would rather walk the job in path
    order until a page of matches turns up, which reads most of a big job when they are
    rare or sort late, and with decisions (whose ranked count it underestimates 200x) it
    compared every image with every decision (600k x 60k: over a minute). Unfiltered, or
    by confidence or review state only (matches spread through the job, no index finds
    them), the page walks the path index: finding them all cost more (docs/performance.md).
    """
    found_first = (filters.label, filters.final_label, filters.reviewed, filters.site)
    if all(value is None for value in found_first) and filters.failed is not True:
        if total is None:
            total = _count(session, matching)
        page = matching.with_only_columns(JobImage.image_id).order_by(
            JobImage.rel_path, JobImage.id
        )
        return list(session.scalars(page.limit(limit).offset(offset))), total
    found = (
        matching.with_only_columns(JobImage.image_id, JobImage.rel_path, JobImage.id)
        .cte("matching")
        .prefix_with("MATERIALIZED")
    )
    rows = session.execute(
        select(found.c.image_id, func.count().over())
        .order_by(found.c.rel_path, found.c.id)
        .limit(limit)
        .offset(offset)
    ).all()
    if not rows:  # no match, or the offset is past the last one
        return [], _count(session, matching) if total is None else total
    return [row[0] for row in rows], rows[0][1] if total is None else total


def _count(session: Session, matching: Select[Any]) -> int:
    return session.scalar(select(func.count()).select_from(matching.subquery())) or 0


def _after(session: Session, job_id: int, image_id: int) -> ColumnElement[bool]:
    """Rows after this image of the job in path order (a keyset cursor)."""
    found = session.execute(
        select(JobImage.rel_path, JobImage.id).where(
            JobImage.job_id == job_id, JobImage.image_id == image_id
        )
    ).first()
    if found is None:
        raise BadInput(
            f"image {image_id} is not in job {job_id}: `after` takes an image_id "
            "of the previous page"
        )
    return tuple_(JobImage.rel_path, JobImage.id) > tuple_(found[0], found[1])


def job_sites(session: Session, job_id: int) -> list[str]:
    """The sites a job's images come from, by name: skipping through the (job, site) index,
    one probe per site, where DISTINCT read every image of the job (600k: 200 ms)."""
    other = aliased(JobImage)
    of_job = and_(JobImage.job_id == job_id, JobImage.site.is_not(None))
    walk = select(func.min(JobImage.site).label("site")).where(of_job).cte("sites", recursive=True)
    following = (
        select(func.min(other.site))
        .where(other.job_id == job_id, other.site > walk.c.site)
        .scalar_subquery()
    )
    walk = walk.union_all(select(following).where(walk.c.site.is_not(None)))
    found = select(walk.c.site).where(walk.c.site.is_not(None)).order_by(walk.c.site)
    return list(session.scalars(found))


def iter_results(
    session: Session, job_id: int, filters: ResultFilters | None = None, batch: int = 1000
) -> Iterator[dict[str, Any]]:
    """Every row of a job in image order, from one query read `batch` rows at a time.

    On PostgreSQL the rows come from a server-side cursor: the first ones are ready at once
    and memory stays flat however big the job (keyset batches re-ranked the job's human
    decisions for every batch: quadratic in the job's size). Unless a filter needs them in
    SQL, the human decisions are read per batch, for the batch's images: joined to the
    cursor, the decisions' row estimate (rank = 1) was 200x too low and PostgreSQL's
    fast-start cursor plan compared every row with every decision of the job (a 600k-row
    job with 60k decisions: 8 s per 1,000 rows).
    """
    job = get_job(session, job_id)
    filters = filters or ResultFilters()
    ctx = _context(session, job.model_version_id)
    if filters.final_label is not None or filters.reviewed is not None:
        query = _query(job_id, job.model_version_id, filters).order_by(JobImage.id)
        rows = session.execute(query.execution_options(yield_per=batch))
        try:
            for r in rows:
                yield _row(tuple(r), ctx)
        finally:
            rows.close()
        return
    columns = cast(
        Select[Any],
        select(JobImage, Image, Prediction, ReviewItem)
        .join(Image, Image.id == JobImage.image_id)
        .outerjoin(Prediction, _prediction_of(job.model_version_id))
        .outerjoin(ReviewItem, ReviewItem.prediction_id == Prediction.id)
        .where(JobImage.job_id == job_id)
        .options(lazyload(JobImage.image)),
    )
    plain = _filtered(columns, filters, None).order_by(JobImage.id)
    stream = session.execute(plain.execution_options(yield_per=batch))
    try:
        for part in stream.partitions():
            decided = _decisions_by_image(session, [r[0].image_id for r in part])
            for r in part:
                yield _row((*r, *decided.get(r[0].image_id, _UNDECIDED)), ctx)
    finally:
        stream.close()


_UNDECIDED = (None, None, None, None)


def _decisions_by_image(session: Session, image_ids: list[int]) -> dict[int, tuple[Any, ...]]:
    """(decision, label, reviewer, decided at) of each of these images a human decided."""
    rows = session.execute(current_decisions(image_ids))
    return {r.image_id: (r.decision, r.label, r.reviewer, r.created_at) for r in rows}


def write_results(session: Session, job_id: int, fmt: str, out: TextIO) -> None:
    """Every row of a job to a text stream: CSV with a header, or a JSON array.

    The job is looked up first, so an unknown id raises NotFound before a byte is written.
    """
    for _ in result_steps(session, job_id, fmt, out):
        pass


def result_steps(session: Session, job_id: int, fmt: str, out: TextIO) -> Iterator[None]:
    """write_results one step at a time: yields after the header and after every row, so a
    caller can send what was written so far (a streamed download)."""
    if fmt not in ("csv", "json"):
        raise ValueError(f"unknown results format {fmt!r}")
    get_job(session, job_id)
    rows = iter_results(session, job_id)
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        yield
        for row in rows:
            writer.writerow(to_csv_row(row))
            yield
        return
    out.write("[")
    yield
    for n, row in enumerate(rows):
        out.write(("," if n else "") + "\n" + json.dumps(row, ensure_ascii=False))
        yield
    out.write("\n]\n")


def to_csv_row(row: dict[str, Any]) -> list[Any]:
    """A result row as CSV cells, in CSV_COLUMNS order (top-k as `label:p;label:p`)."""
    cells = dict(row)
    cells["top_k"] = ";".join(f"{t['label']}:{t['confidence']:.4f}" for t in row["top_k"])
    cells["needs_review"] = "yes" if row["needs_review"] else "no"
    cells["venomous_in_top_k"] = ";".join(row["venomous_in_top_k"])
    return [safe_cell(cells[c]) for c in CSV_COLUMNS]


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """Empty for None; text that a spreadsheet would run as a formula is quoted with '."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in FORMULA_STARTS:
        return "'" + value
    return value


def unsafe_cell(value: str) -> str:
    """The text that safe_cell quoted, for programs that read our CSV files back."""
    return value[1:] if value[:1] == "'" and value[1:2] in FORMULA_STARTS else value
