"""The JSON API blueprint at /api/v1; every view declares the role it needs (see web.auth).

Route and role matrix (admin > reviewer > viewer; a role may do what every lower one may):

    GET  /health                      public (no key)
    GET  /openapi.json                public (documentation)
    GET  /jobs, /jobs/<id>            viewer
    GET  /jobs/<id>/predictions       viewer
    GET  /jobs/<id>/results.csv       viewer
    POST /jobs                        reviewer
    POST /jobs/<id>/cancel            reviewer
    GET  /review/stats                viewer
    GET  /review/next                 reviewer (claims an item)
    POST /review/items/<id>/decision  reviewer
    POST /review/undo                 reviewer
    GET  /models, /models/<id>        viewer
    POST /models/<id>/activate        admin
    GET  /keys, POST /keys            admin
    POST /keys/<id>/revoke            admin
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
    system,
    training,
)
