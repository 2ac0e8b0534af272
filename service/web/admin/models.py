"""The model registry page: versions, their metrics, activation and rollback."""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import select

from service import registry
from service.models import ModelActivation, Role
from service.web.admin import bp, role_required
from service.web.context import db_read, db_session


@bp.get("/models")
@role_required(Role.VIEWER)
def list_models() -> ResponseReturnValue:
    with db_read() as session:
        models = registry.list_models(session)
        history = list(
            session.scalars(select(ModelActivation).order_by(ModelActivation.id.desc()).limit(20))
        )
        return render_template("models.html", models=models, history=history)


@bp.post("/models/<id:model_id>/activate")
@role_required(Role.ADMIN)
def activate_model(model_id: int) -> ResponseReturnValue:
    with db_session() as session:
        model = registry.activate_model(
            session, model_id, reason="manual (web)", actor=current_user.username
        )
        flash(f"Model version {model.id} ({model.name}) is now active.", "success")
    return redirect(url_for("admin.list_models"), 303)
