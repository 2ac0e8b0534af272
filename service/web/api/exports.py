"""Dataset exports: list, inspect, start one, and pin the frozen test set."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import url_for
from flask.typing import ResponseReturnValue
from pydantic import Field

from service import exports, tasks_client
from service.models import ExportStatus, Role
from service.web.api import bp
from service.web.api.inputs import Body, PageQuery, page
from service.web.api.operations import Output, Page, Sent, operation
from service.web.auth import current_caller, requires
from service.web.context import current_settings, db_read, db_session


class ExportCreate(Body):
    """Options of an export; omitted ones come from the settings."""

    include_confident: float | None = Field(default=None, gt=0.0, le=1.0, allow_inf_nan=False)
    """Also export predictions at least this confident (they only ever go to train);
    default: human labels only."""
    min_per_class: int | None = Field(default=None, ge=1, le=1_000_000)
    """Classes with fewer images are dropped (listed in the dataset card)."""
    val_fraction: float | None = Field(default=None, ge=0.0, le=0.5, allow_inf_nan=False)
    test_fraction: float | None = Field(default=None, ge=0.0, le=0.5, allow_inf_nan=False)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    group_by_site: bool = True
    """Keep each site (top-level folder) in one split."""


class Export(Output):
    """A dataset export with its counts."""

    id: int
    status: ExportStatus
    folder: str | None
    """The export's folder name, `<id>-<timestamp>`."""
    options: dict[str, Any]
    counts: dict[str, Any] | None
    """total, splits, classes (per split), sources, split_mode."""
    error: str | None
    created_by: str
    created_at: datetime
    finished_at: datetime | None


class CreatedExport(Export, Sent):
    """A new export, and whether it was handed to the broker."""


class ExportPage(Page[Export]):
    """One page of exports, newest first."""


class TestSetSummary(Output):
    """The frozen test set every promotion is judged on."""

    export_id: int
    n: int
    labels: dict[str, int]
    """Images per label."""
    sha256_digest: str
    """sha256 of the sorted sha256 list of its images: one value that names the set."""
    pinned: bool
    frozen_at: datetime


class TestSet(Output):
    """The frozen test set, or null before any export has one."""

    test_set: TestSetSummary | None


@bp.get("/exports")
@requires(Role.VIEWER)
@operation(ExportPage, query=PageQuery)
def list_exports(query: PageQuery) -> ResponseReturnValue:
    """List dataset exports, newest first."""
    with db_read() as session:
        found, total = exports.list_exports(session, limit=query.limit, offset=query.offset)
        return page([exports.export_to_dict(e) for e in found], total, query)


@bp.get("/exports/<id:export_id>")
@requires(Role.VIEWER)
@operation(Export)
def get_export(export_id: int) -> ResponseReturnValue:
    """A dataset export with its counts."""
    with db_read() as session:
        return exports.export_to_dict(exports.get_export(session, export_id))


@bp.post("/exports")
@requires(Role.ADMIN)
@operation({202: CreatedExport}, body=ExportCreate)
def create_export(body: ExportCreate) -> ResponseReturnValue:
    """Export verified labels into a new training-set folder.

    Queue an immutable, versioned export: deduplicated by sha256, split by whole sites,
    unknown/unusable never exported. Omitted options come from the settings.
    """
    settings = current_settings()
    options = exports.ExportOptions.from_settings(settings, **body.model_dump())
    with db_session() as session:
        export = exports.create_export(session, options, created_by=current_caller().principal)
        payload = exports.export_to_dict(export)
    sent = tasks_client.enqueue(settings, tasks_client.EXPORT_TASK, [export.id])
    location = url_for("api.get_export", export_id=export.id)
    return {**payload, **sent.to_dict()}, 202, {"Location": location}


@bp.get("/exports/test-set")
@requires(Role.VIEWER)
@operation(TestSet)
def get_test_set() -> ResponseReturnValue:
    """The frozen test set promotions are judged on.

    Null until an export has a test split.
    """
    with db_read() as session:
        test_set = exports.frozen_test_set(session, current_settings())
    return {"test_set": test_set.summary() if test_set else None}


@bp.post("/exports/<id:export_id>/pin-test-set")
@requires(Role.ADMIN)
@operation(TestSet, errors=(409,))
def pin_test_set(export_id: int) -> ResponseReturnValue:
    """Pin this export's test split as the frozen test set.

    Promotions are judged on it from now on. 409 if the export is not finished or has no
    test split.
    """
    with db_session() as session:
        test_set = exports.pin_test_set(session, current_settings(), export_id)
    return {"test_set": test_set.summary()}
