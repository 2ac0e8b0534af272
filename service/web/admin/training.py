"""Training runs in the UI: the list, a run's page (epochs, plots, gate), promote, rollback."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from flask import abort, flash, redirect, render_template, send_file, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user

from service import promotion, registry, retraining, suspects, tasks_client, training_stack
from service.models import Role
from service.web.admin import bp, flash_enqueued, role_required
from service.web.context import current_settings, db_read, db_session

RUNS_PER_PAGE = 50
# The only run-folder files the UI serves (training writes them next to metrics.json).
PLOTS = ("confusion_val.png", "confusion_test.png", "reliability_val.png")


@bp.get("/training")
@role_required(Role.VIEWER)
def list_training_runs() -> ResponseReturnValue:
    with db_read() as session:
        runs, total = retraining.list_runs(session, limit=RUNS_PER_PAGE)
        rows = [retraining.run_to_dict(r) for r in runs]
        active = registry.active_model(session)
        active_name = f"#{active.id} {active.name}" if active else None
    return render_template("training/list.html", runs=rows, total=total, active=active_name)


@bp.get("/training/<id:run_id>")
@role_required(Role.VIEWER)
def training_run(run_id: int) -> ResponseReturnValue:
    with db_read() as session:
        row = retraining.get_run(session, run_id)
        run, run_dir = retraining.run_to_dict(row, full=True), row.run_dir
        candidate = (
            registry.get_model(session, row.model_version_id) if row.model_version_id else None
        )
        candidate_status = candidate.status.value if candidate else None
        suspect_count = suspects.count_for_run(session, run_id)
    folder = Path(run_dir) if run_dir else None
    return render_template(
        "training/show.html",
        run=run,
        epochs=_epochs(folder),
        plots=[p for p in PLOTS if folder and (folder / p).is_file()],
        comparison=_comparison(run["promotion"]),
        candidate_status=candidate_status,
        suspect_count=suspect_count,
    )


@bp.get("/training/<id:run_id>/plots/<name>")
@role_required(Role.VIEWER)
def training_plot(run_id: int, name: str) -> ResponseReturnValue:
    if name not in PLOTS:
        abort(404)
    with db_read() as session:
        run_dir = retraining.get_run(session, run_id).run_dir
    path = Path(run_dir) / name if run_dir else None
    if path is None or not path.is_file():
        abort(404)
    return send_file(path, mimetype="image/png", max_age=3600)


@bp.post("/training/retrain")
@role_required(Role.ADMIN)
def retrain_now() -> ResponseReturnValue:
    settings = current_settings()
    training_stack.require_training(settings)
    with db_session() as session:
        result = retraining.retrain_check(session, settings, force=True, trigger="manual")
    if result.run_id is None:
        flash(f"No run started: {result.reason}.", "error")
        return redirect(url_for("admin.list_training_runs"), 303)
    flash_enqueued(
        tasks_client.enqueue(settings, tasks_client.TRAIN_TASK, [result.run_id]), result.reason
    )
    return redirect(url_for("admin.training_run", run_id=result.run_id), 303)


@bp.post("/training/<id:run_id>/promote")
@role_required(Role.ADMIN)
def promote_training_run(run_id: int) -> ResponseReturnValue:
    with db_session() as session:
        model = promotion.promote_run(session, run_id, current_user.username)
        flash(f"Model version {model.id} ({model.name}) is now active.", "success")
    return redirect(url_for("admin.training_run", run_id=run_id), 303)


@bp.post("/training/rollback")
@role_required(Role.ADMIN)
def rollback_model() -> ResponseReturnValue:
    with db_session() as session:
        model = registry.rollback(session, actor=current_user.username)
        flash(f"Rolled back: model version {model.id} ({model.name}) is active again.", "success")
    return redirect(url_for("admin.list_training_runs"), 303)


def _epochs(folder: Path | None) -> list[dict[str, str]]:
    """Per-epoch rows of the run's metrics.csv (empty before the first epoch ends)."""
    path = folder / "run" / "metrics.csv" if folder else None
    if path is None or not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _comparison(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per-class rows with both models' scores side by side."""
    if not record or not record.get("candidate"):
        return []
    new = record["candidate"]["per_class"]
    old = (record.get("active") or {}).get("per_class", {})
    return [
        {"label": label, "candidate": new.get(label), "active": old.get(label)}
        for label in sorted(set(new) | set(old))
    ]
