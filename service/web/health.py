"""Operations endpoints outside the API: /healthz (alive), /readyz (database and broker
reachable) and /metrics (Prometheus; public or key-only by setting)."""

from __future__ import annotations

from flask import Blueprint, Response
from flask.typing import ResponseReturnValue

from service import monitoring
from service.models import Role
from service.web.auth import authorize, public, requires
from service.web.context import current_settings

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@public
def healthz() -> ResponseReturnValue:
    """The process is alive and serving; checks nothing else (a liveness probe)."""
    return {"status": "ok"}


@bp.get("/readyz")
@public
def readyz() -> ResponseReturnValue:
    """Ready for traffic: the database answers and the broker accepts a connection."""
    settings = current_settings()
    problems = {
        "database": monitoring.check_database(settings),
        "broker": monitoring.check_broker(settings),
    }
    body = {name: "ok" if problem is None else "unavailable" for name, problem in problems.items()}
    ready = not any(problems.values())
    return {"status": "ok" if ready else "unavailable", **body}, 200 if ready else 503


@bp.get("/metrics")
@requires(Role.VIEWER)
def metrics() -> ResponseReturnValue:
    """Prometheus metrics; with HERPSCORE_METRICS_PUBLIC=false (the default) a viewer key."""
    settings = current_settings()
    if not settings.metrics_public:
        authorize(metrics)
    payload, content_type = monitoring.render_metrics(settings)
    return Response(payload, content_type=content_type)
