"""Dataset exports: list, inspect, start one, and pin the frozen test set."""

from __future__ import annotations

import logging

from flask import url_for
from flask.typing import ResponseReturnValue
from kombu.exceptions import OperationalError as BrokerUnavailable
from pydantic import Field

from service import exports
from service.models import Role
from service.web.api import bp
from service.web.api.inputs import Body, PageQuery, page, parse_body, parse_query
from service.web.auth import current_caller, requires
from service.web.context import current_settings, db_read, db_session

log = logging.getLogger(__name__)


class ExportCreate(Body):
    include_confident: float | None = Field(default=None, gt=0.0, le=1.0, allow_inf_nan=False)
    min_per_class: int | None = Field(default=None, ge=1, le=1_000_000)
    val_fraction: float | None = Field(default=None, ge=0.0, le=0.5, allow_inf_nan=False)
    test_fraction: float | None = Field(default=None, ge=0.0, le=0.5, allow_inf_nan=False)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    group_by_site: bool = True


@bp.get("/exports")
@requires(Role.VIEWER)
def list_exports() -> ResponseReturnValue:
    query = parse_query(PageQuery)
    with db_read() as session:
        found, total = exports.list_exports(session, limit=query.limit, offset=query.offset)
        return page([exports.export_to_dict(e) for e in found], total, query)


@bp.get("/exports/<id:export_id>")
@requires(Role.VIEWER)
def get_export(export_id: int) -> ResponseReturnValue:
    with db_read() as session:
        return exports.export_to_dict(exports.get_export(session, export_id))


@bp.post("/exports")
@requires(Role.ADMIN)
def create_export() -> ResponseReturnValue:
    """Record a queued export, then (after the commit) hand it to the export queue."""
    body = parse_body(ExportCreate)
    settings = current_settings()
    options = exports.ExportOptions.from_settings(settings, **body.model_dump())
    with db_session() as session:
        export = exports.create_export(session, options, created_by=current_caller().principal)
        payload = exports.export_to_dict(export)
    try:
        exports.enqueue_export(settings, export.id)
    except BrokerUnavailable as exc:
        log.warning("export %s recorded but not queued (broker unavailable: %s)", export.id, exc)
    return payload, 202, {"Location": url_for("api.get_export", export_id=export.id)}


@bp.get("/exports/test-set")
@requires(Role.VIEWER)
def get_test_set() -> ResponseReturnValue:
    """The frozen test set every promotion is judged on (null until an export has one)."""
    with db_read() as session:
        test_set = exports.frozen_test_set(session, current_settings())
    return {"test_set": test_set.summary() if test_set else None}


@bp.post("/exports/<id:export_id>/pin-test-set")
@requires(Role.ADMIN)
def pin_test_set(export_id: int) -> ResponseReturnValue:
    """Judge promotions on this export's test split from now on."""
    with db_session() as session:
        test_set = exports.pin_test_set(session, current_settings(), export_id)
    return {"test_set": test_set.summary()}
