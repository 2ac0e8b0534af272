"""Public meta routes: the health check and the OpenAPI description."""

from __future__ import annotations

from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service.web.api import bp
from service.web.api.openapi import openapi_spec
from service.web.auth import public
from service.web.context import db_read


@bp.get("/health")
@public
def health() -> ResponseReturnValue:
    """Liveness and database reachability; tells nothing else to anonymous callers."""
    try:
        with db_read() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return {"status": "error", "database": "unavailable"}, 503
    return {"status": "ok", "database": "ok"}


@bp.get("/openapi.json")
@public
def openapi() -> ResponseReturnValue:
    """The OpenAPI 3.1 description of this API (public: it is documentation)."""
    return openapi_spec()
