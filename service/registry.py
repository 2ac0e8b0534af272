"""The model registry: immutable model folders plus ModelVersion rows; promotion moves a pointer."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service import audit
from service.db import get_or_not_found
from service.errors import InvalidModel, InvalidState
from service.models import ModelActivation, ModelStatus, ModelVersion, utcnow
from service.modelspec import load_artifact
from service.settings import Settings
from service.species import add_labels


def add_model(
    session: Session,
    settings: Settings,
    folder: str | Path,
    *,
    name: str | None = None,
    activate: bool = False,
    source: str = "",
    metrics: dict[str, Any] | None = None,
) -> ModelVersion:
    """Validate a model folder, copy it into the registry read-only, record a ModelVersion."""
    artifact = load_artifact(folder)
    settings.models_path.mkdir(parents=True, exist_ok=True)
    digest = artifact.files_sha256["model.onnx"]
    target = settings.models_path / f"{digest[:16]}"
    existing = session.scalar(select(ModelVersion).where(ModelVersion.path == str(target)))
    if existing is not None:
        raise InvalidState(
            f"this model is already registered as version {existing.id}",
            {"model_version_id": existing.id},
        )
    _copy_immutably(artifact.path, target, list(artifact.files_sha256))
    copied = load_artifact(target, check_onnx=False)
    if copied.files_sha256 != artifact.files_sha256:
        shutil.rmtree(target, ignore_errors=True)
        raise InvalidModel("model files changed while they were being copied; try again")
    version = ModelVersion(
        name=name or artifact.metadata.get("name") or Path(folder).resolve().name,
        path=str(target),
        status=ModelStatus.CANDIDATE,
        num_classes=len(artifact.labels),
        class_map=artifact.class_map,
        meta=artifact.metadata,
        files_sha256=artifact.files_sha256,
        metrics=metrics if metrics is not None else artifact.metadata.get("metrics"),
        source=source or f"import:{Path(folder).resolve()}",
    )
    session.add(version)
    session.flush()
    add_labels(session, artifact.labels)  # the species table knows every label served
    if activate:
        activate_model(session, version.id)
    return version


def _copy_immutably(source: Path, target: Path, names: list[str]) -> None:
    """Copy into a temporary sibling, make files read-only, then rename into place."""
    staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=target.parent))
    try:
        for name in names:
            shutil.copyfile(source / name, staging / name)
            os.chmod(staging / name, 0o444)
        if target.exists():
            shutil.rmtree(target)  # an earlier copy whose database row was never committed
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def get_model(session: Session, model_id: int) -> ModelVersion:
    model = get_or_not_found(session, ModelVersion, model_id, "model version")
    return model


def list_models(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())))


def active_model(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.status == ModelStatus.ACTIVE))


def require_active_model(session: Session) -> ModelVersion:
    model = active_model(session)
    if model is None:
        raise InvalidState("no model is active: add one with `herpscore models add DIR --activate`")
    return model


def activate_model(
    session: Session, model_id: int, *, reason: str = "manual", actor: str = ""
) -> ModelVersion:
    """Make one version active; the previously active one becomes retired; log the move."""
    model = get_model(session, model_id)
    if model.status == ModelStatus.ACTIVE:
        return model
    previous = active_model(session)
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.status == ModelStatus.ACTIVE)
        .values(status=ModelStatus.RETIRED)
    )
    session.flush()
    model.status = ModelStatus.ACTIVE
    model.activated_at = utcnow()
    session.add(
        ModelActivation(
            model_version_id=model.id,
            previous_id=previous.id if previous else None,
            reason=reason,
            actor=actor or audit.SYSTEM_ACTOR,
        )
    )
    action = {"rollback": "model.rollback"}.get(reason, "model.activate")
    if reason.startswith("promotion"):
        action = "model.promote"
    audit.record(
        session,
        actor,
        action,
        f"model:{model.id}",
        reason=reason,
        previous_id=previous.id if previous else None,
    )
    session.flush()
    return model


def rollback(session: Session, actor: str = "") -> ModelVersion:
    """Re-activate the version that was active before the current one."""
    last = session.scalar(select(ModelActivation).order_by(ModelActivation.id.desc()).limit(1))
    if last is None or last.previous_id is None:
        raise InvalidState("there is no earlier active model to roll back to")
    return activate_model(session, last.previous_id, reason="rollback", actor=actor)
