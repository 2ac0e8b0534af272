"""The JSON API blueprint at /api/v1; every view declares its role and its operation.

Each view carries `@requires(Role.X)` (or `@public`), which `authorize` enforces before it
runs, and `@operation(...)` (service.web.api.operations), which parses its query and body
and describes its answers. The OpenAPI document at /api/v1/openapi.json is built from both,
and its `info.description` holds the table of routes and roles (see docs/api.md).
"""

from __future__ import annotations

from flask import Blueprint, current_app, request

from service.web.auth import authorize

bp = Blueprint("api", __name__, url_prefix="/api/v1")

# JSON bodies here are a few hundred bytes; refuse anything absurd before reading it.
MAX_BODY_BYTES = 1024 * 1024


@bp.before_request
def _check_access() -> None:
    request.max_content_length = MAX_BODY_BYTES
    assert request.endpoint is not None  # blueprint hooks run only for matched routes
    authorize(current_app.view_functions[request.endpoint])


# The view modules attach their routes to `bp` when imported.
from service.web.api import (  # noqa: E402, F401
    exports,
    field,
    jobs,
    keys,
    models,
    review,
    suspects,
    system,
    training,
    users,
)
