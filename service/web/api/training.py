"""Training runs: list, inspect, run the retrain check now, promote; model rollback."""

from __future__ import annotations

import logging

from flask.typing import ResponseReturnValue
from kombu.exceptions import OperationalError as BrokerUnavailable

from service import promotion, registry, retraining, training_stack
from service.models import Role
from service.web.api import bp
from service.web.api.inputs import Body, PageQuery, page, parse_body, parse_query
from service.web.api.models import model_to_dict
from service.web.auth import current_caller, requires
from service.web.context import current_settings, db_read, db_session

log = logging.getLogger(__name__)


class RetrainRequest(Body):
    force: bool = False


class PromoteRequest(Body):
    force: bool = False


@bp.get("/training/runs")
@requires(Role.VIEWER)
def list_training_runs() -> ResponseReturnValue:
    query = parse_query(PageQuery)
    with db_read() as session:
        runs, total = retraining.list_runs(session, limit=query.limit, offset=query.offset)
        return page([retraining.run_to_dict(r) for r in runs], total, query)


@bp.get("/training/runs/<id:run_id>")
@requires(Role.VIEWER)
def get_training_run(run_id: int) -> ResponseReturnValue:
    with db_read() as session:
        return retraining.run_to_dict(retraining.get_run(session, run_id), full=True)


@bp.post("/training/retrain")
@requires(Role.ADMIN)
def retrain_now() -> ResponseReturnValue:
    """Run the retrain check now (ignoring the schedule; `force` ignores the label count)."""
    body = parse_body(RetrainRequest)
    settings = current_settings()
    training_stack.require_training(settings)
    with db_session() as session:
        result = retraining.retrain_check(session, settings, force=body.force, trigger="manual")
    if result.run_id is not None:
        try:
            retraining.enqueue_training(settings, result.run_id)
        except BrokerUnavailable as exc:
            log.warning("training run %s not queued (broker unavailable: %s)", result.run_id, exc)
    return result.to_dict(), 202 if result.started else 200


@bp.post("/training/runs/<id:run_id>/promote")
@requires(Role.ADMIN)
def promote_training_run(run_id: int) -> ResponseReturnValue:
    """Activate a run's candidate; 409 if it failed the gate, unless `force`."""
    body = parse_body(PromoteRequest)
    with db_session() as session:
        model = promotion.promote_run(session, run_id, current_caller().name, force=body.force)
        return model_to_dict(model)


@bp.post("/models/rollback")
@requires(Role.ADMIN)
def rollback_model() -> ResponseReturnValue:
    """Re-activate the version that was active before the current one."""
    with db_session() as session:
        return model_to_dict(registry.rollback(session, actor=current_caller().name))
