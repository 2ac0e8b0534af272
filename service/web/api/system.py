"""Public meta routes: the health check and the OpenAPI description."""

from __future__ import annotations

from typing import Any, Literal

from flask import current_app
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service.web.api import bp
from service.web.api.openapi import openapi_document
from service.web.api.operations import JSON, Content, Output, operation
from service.web.auth import public
from service.web.context import db_read


class Health(Output):
    """Whether the service and its database answer."""

    status: Literal["ok", "error"]
    database: Literal["ok", "unavailable"]


@bp.get("/health")
@public
@operation({200: Health, 503: Health})
def health() -> ResponseReturnValue:
    """Health check.

    Liveness and database reachability; tells nothing else to anonymous callers.
    """
    try:
        with db_read() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return {"status": "error", "database": "unavailable"}, 503
    return {"status": "ok", "database": "ok"}


@bp.get("/openapi.json")
@public
@operation({200: Content("OK: the OpenAPI 3.1 document.", {JSON: dict[str, Any]})})
def openapi() -> ResponseReturnValue:
    """This OpenAPI description.

    Public: it is documentation, built from the routes' declarations.
    """
    return openapi_document(current_app)
