"""Model versions in the registry: list, inspect, activate."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask.typing import ResponseReturnValue

from service import registry
from service.models import ModelStatus, ModelVersion, Role
from service.web.api import bp
from service.web.api.operations import ItemList, Output, operation
from service.web.auth import current_caller, requires
from service.web.context import db_read, db_session


class Model(Output):
    """A model version in the registry."""

    id: int
    name: str
    status: ModelStatus
    num_classes: int
    labels: list[str]
    input: dict[str, Any] | None
    """The preprocessing contract (size, resize, crop_pct, mean, std, ...)."""
    temperature: float | None
    metrics: dict[str, Any] | None
    source: str
    files_sha256: dict[str, str]
    created_at: datetime
    activated_at: datetime | None


class ModelList(ItemList[Model]):
    """Every model version, newest first."""


def model_to_dict(model: ModelVersion) -> dict[str, Any]:
    """The public JSON shape of a model version (no server paths)."""
    return {
        "id": model.id,
        "name": model.name,
        "status": model.status.value,
        "num_classes": model.num_classes,
        "labels": model.labels,
        "input": model.meta.get("input"),
        "temperature": model.meta.get("temperature"),
        "metrics": model.metrics,
        "source": model.source,
        "files_sha256": model.files_sha256,
        "created_at": model.created_at.isoformat(),
        "activated_at": model.activated_at.isoformat() if model.activated_at else None,
    }


@bp.get("/models")
@requires(Role.VIEWER)
@operation(ModelList)
def list_models() -> ResponseReturnValue:
    """List model versions, newest first."""
    with db_read() as session:
        items = [model_to_dict(m) for m in registry.list_models(session)]
    return {"items": items, "total": len(items)}


@bp.get("/models/<id:model_id>")
@requires(Role.VIEWER)
@operation(Model)
def get_model(model_id: int) -> ResponseReturnValue:
    """A model version."""
    with db_read() as session:
        return model_to_dict(registry.get_model(session, model_id))


@bp.post("/models/<id:model_id>/activate")
@requires(Role.ADMIN)
@operation(Model)
def activate_model(model_id: int) -> ResponseReturnValue:
    """Activate a model version.

    New jobs use this version; the previously active one is retired. Running jobs keep the
    version they were pinned to.
    """
    with db_session() as session:
        model = registry.activate_model(
            session, model_id, reason="manual (api)", actor=current_caller().principal
        )
        return model_to_dict(model)
