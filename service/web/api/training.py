"""Training runs: list, inspect, run the retrain check now, promote; model rollback."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask.typing import ResponseReturnValue

from service import promotion, registry, retraining, tasks_client, training_stack
from service.models import Role, RunStatus
from service.web.api import bp
from service.web.api.inputs import Body, PageQuery, page
from service.web.api.models import Model, model_to_dict
from service.web.api.operations import Output, Page, operation
from service.web.auth import current_caller, requires
from service.web.context import current_settings, db_read, db_session


class RetrainRequest(Body):
    force: bool = False
    """Start a run even with fewer new labels than the settings ask for."""


class PromoteRequest(Body):
    force: bool = False
    """Activate the candidate even if it failed the promotion gate."""


class TrainingRun(Output):
    """A training run; its metrics and promotion are headline numbers in lists."""

    id: int
    status: RunStatus
    trigger: str
    export_id: int | None
    model_version_id: int | None
    params: dict[str, Any]
    metrics: dict[str, Any] | None
    """Headline numbers per split in lists; metrics.json in full by id."""
    promotion: dict[str, Any] | None
    """The gate: passed, promoted, reasons, both models' scores."""
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class TrainingRunPage(Page[TrainingRun]):
    """One page of training runs, newest first."""


class RetrainResult(Output):
    """What the retrain check decided."""

    started: bool
    reason: str
    new_labels: int
    needed: int
    run_id: int | None
    export_id: int | None
    queued: bool | None = None
    """Only when a run was started: False if the broker was unreachable (the run is
    recorded and the scheduler sends it once the broker answers)."""
    waiting_for_broker: bool | None = None
    message: str | None = None


@bp.get("/training/runs")
@requires(Role.VIEWER)
@operation(TrainingRunPage, query=PageQuery)
def list_training_runs(query: PageQuery) -> ResponseReturnValue:
    """List training runs, newest first."""
    with db_read() as session:
        runs, total = retraining.list_runs(session, limit=query.limit, offset=query.offset)
        return page([retraining.run_to_dict(r) for r in runs], total, query)


@bp.get("/training/runs/<id:run_id>")
@requires(Role.VIEWER)
@operation(TrainingRun)
def get_training_run(run_id: int) -> ResponseReturnValue:
    """A training run with its full metrics and promotion decision."""
    with db_read() as session:
        return retraining.run_to_dict(retraining.get_run(session, run_id), full=True)


@bp.post("/training/retrain")
@requires(Role.ADMIN)
@operation({202: RetrainResult, 200: RetrainResult}, body=RetrainRequest)
def retrain_now(body: RetrainRequest) -> ResponseReturnValue:
    """Run the retrain check now.

    Ignores the schedule; with `force`, also the minimum of new labels. 202 when a run was
    queued, 200 when there is nothing to do (`reason` says why).
    """
    settings = current_settings()
    training_stack.require_training(settings)
    with db_session() as session:
        result = retraining.retrain_check(session, settings, force=body.force, trigger="manual")
    status = 202 if result.started else 200
    if result.run_id is None:
        return result.to_dict(), status
    sent = tasks_client.enqueue(settings, tasks_client.TRAIN_TASK, [result.run_id])
    return {**result.to_dict(), **sent.to_dict()}, status


@bp.post("/training/runs/<id:run_id>/promote")
@requires(Role.ADMIN)
@operation(Model, body=PromoteRequest, errors=(409,))
def promote_training_run(run_id: int, body: PromoteRequest) -> ResponseReturnValue:
    """Activate a run's candidate model.

    409 if the candidate failed the promotion gate (unless `force`) or the run has none.
    """
    with db_session() as session:
        model = promotion.promote_run(session, run_id, current_caller().principal, force=body.force)
        return model_to_dict(model)


@bp.post("/models/rollback")
@requires(Role.ADMIN)
@operation(Model, errors=(409,))
def rollback_model() -> ResponseReturnValue:
    """Roll back to the previously active model version.

    409 if there is no earlier active version.
    """
    with db_session() as session:
        return model_to_dict(registry.rollback(session, actor=current_caller().principal))
