"""Scheduled retraining: enough new verified labels -> export -> train -> publish -> gate.

The worker calls `retrain_check` on a schedule and `run_training` on the training queue;
both take the heavy parts (the fine-tuner, the ONNX scorer) as functions, so this module
imports neither torch nor the workers.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service import audit, promotion, registry, suspects
from service.db import get_or_not_found, newest_first, session_scope
from service.errors import HerpscoreError, InvalidState
from service.exports import (
    ExportOptions,
    create_export,
    current_decisions,
    get_export,
    run_export,
)
from service.models import (
    DatasetExport,
    Decision,
    ExportStatus,
    RunStatus,
    TrainingRun,
    utcnow,
)
from service.settings import Settings

log = logging.getLogger(__name__)

ACTOR = audit.RETRAINING_ACTOR

# argv for `python -m training fit` -> the model folder it wrote.
Fitter = Callable[[list[str]], Path]


@dataclass
class CheckResult:
    """What a retrain check decided."""

    started: bool
    reason: str
    new_labels: int
    needed: int
    run_id: int | None = None
    export_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def training_params(settings: Settings) -> dict[str, Any]:
    """The fine-tuning configuration a run records (from settings)."""
    return {
        "backbone": settings.training_backbone,
        "weights": settings.training_weights,
        "size": settings.training_size,
        "epochs_stage1": settings.training_epochs_stage1,
        "epochs_stage2": settings.training_epochs_stage2,
        "batch_size": settings.training_batch_size,
        "min_per_class": settings.training_min_per_class,
        "int8": settings.training_int8,
        # Never publish a fine-tune worse than the linear probe (seconds to fit); extra_args
        # may say --baseline none.
        "baseline": "probe",
        "extra_args": settings.training_extra_args,
        "label_errors": settings.label_errors,
    }


def fit_argv(params: dict[str, Any], data: Path, out: Path, resume: bool) -> list[str]:
    """The `python -m training fit` arguments for a run."""
    argv = [
        "--data", str(data), "--out", str(out),
        "--backbone", str(params["backbone"]), "--weights", str(params["weights"]),
        "--epochs-stage1", str(params["epochs_stage1"]),
        "--epochs-stage2", str(params["epochs_stage2"]),
        "--batch-size", str(params["batch_size"]),
        "--min-per-class", str(params["min_per_class"]),
        "--int8" if params["int8"] else "--no-int8",
    ]  # fmt: skip
    if params.get("size"):
        argv += ["--size", str(params["size"])]
    if params.get("baseline"):  # runs queued before it existed have none
        argv += ["--baseline", str(params["baseline"])]
    if params.get("label_errors"):  # likewise
        argv += ["--label-errors", str(params["label_errors"])]
    argv += shlex.split(params.get("extra_args") or "")
    if resume:
        argv.append("--resume")
    return argv


# ---------------------------------------------------------------- the check


def labels_cutoff(session: Session) -> datetime | None:
    """When the labels of the newest run that did not fail were read (None: never trained)."""
    export = session.scalar(
        select(DatasetExport)
        .join(TrainingRun, TrainingRun.export_id == DatasetExport.id)
        .where(TrainingRun.status != RunStatus.FAILED)
        .order_by(TrainingRun.id.desc())
        .limit(1)
    )
    if export is None:
        return None
    snapshot = (export.counts or {}).get("snapshot_at")
    return datetime.fromisoformat(snapshot) if snapshot else export.created_at


def count_new_labels(session: Session, since: datetime | None) -> int:
    """Images whose current human decision is a label given after `since`."""
    current = current_decisions().subquery()
    query = select(func.count()).select_from(current).where(current.c.decision == Decision.LABEL)
    if since is not None:
        query = query.where(current.c.created_at > since)
    return session.scalar(query) or 0


def retrain_check(
    session: Session, settings: Settings, *, force: bool = False, trigger: str = "schedule"
) -> CheckResult:
    """Queue an export + training run when enough new labels exist (or when forced).

    The caller commits, then sends the run id with `tasks_client.enqueue(..., TRAIN_TASK, ...)`.
    """
    needed = settings.retrain_min_new_labels
    busy = _run_in_progress(session, settings)
    new = count_new_labels(session, labels_cutoff(session))
    if busy is not None:
        return CheckResult(False, f"training run {busy} is still in progress", new, needed)
    if new < needed and not force:
        return CheckResult(False, f"{new} new verified labels, {needed} needed", new, needed)
    export = create_export(session, ExportOptions.from_settings(settings), created_by=ACTOR)
    run = TrainingRun(
        export_id=export.id,
        status=RunStatus.QUEUED,
        trigger=trigger,
        params=training_params(settings),
    )
    session.add(run)
    session.flush()
    reason = "forced" if force and new < needed else f"{new} new verified labels (>= {needed})"
    log.info("retraining: run %d on export %d (%s)", run.id, export.id, reason)
    return CheckResult(True, reason, new, needed, run.id, export.id)


def _run_in_progress(session: Session, settings: Settings) -> int | None:
    """The id of a live queued/running run; runs silent for too long are marked failed."""
    for run in session.scalars(
        select(TrainingRun).where(TrainingRun.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]))
    ):
        if not _is_stale(run, settings):
            return run.id
        run.status, run.finished_at = RunStatus.FAILED, utcnow()
        run.error = f"no sign of life for {settings.retrain_stale_seconds:.0f} s: taken as dead"
        log.warning("training run %d: %s", run.id, run.error)
    return None


def _is_stale(run: TrainingRun, settings: Settings) -> bool:
    """No file in the run folder (nor the row) changed within retrain_stale_seconds."""
    last = (run.started_at or run.created_at).timestamp()
    if run.run_dir and Path(run.run_dir).is_dir():
        for path in Path(run.run_dir).rglob("*"):
            last = max(last, path.stat().st_mtime)
    return time.time() - last > settings.retrain_stale_seconds


# ---------------------------------------------------------------- one run


def run_training(
    settings: Settings, run_id: int, fit: Fitter, predict: promotion.Predictor
) -> TrainingRun | None:
    """Export (if needed), fine-tune, publish a candidate and judge it; records every step.

    Idempotent: a finished run is left alone, a live duplicate delivery does nothing, and
    a run that died mid-way resumes from its last checkpoint. Expected failures (bad data,
    missing weights) mark the run failed; unexpected ones do too, then propagate.
    """
    claimed = _claim(settings, run_id)
    if claimed is None:
        return None
    export_id, params, run_dir, resume = claimed
    try:
        export_path = _export_for(settings, export_id)
        model_dir = fit(fit_argv(params, export_path, run_dir, resume))
        metrics = _read_metrics(run_dir)
        candidate_id = _publish(settings, run_id, model_dir, metrics)
        _record_suspects(settings, run_id)
        with session_scope(settings.db_url) as session:
            plan = promotion.plan_evaluation(session, settings, candidate_id)
        record = promotion.evaluate(plan, predict)
        with session_scope(settings.db_url) as session:
            run = _get_run(session, run_id)
            promotion.apply_decision(session, run, record, settings.auto_promote, ACTOR)
            run.status, run.finished_at = RunStatus.DONE, utcnow()
            return run
    except Exception as exc:
        _fail(settings, run_id, exc)
        if isinstance(exc, HerpscoreError) or type(exc).__name__ in _EXPECTED:
            log.error("training run %d failed: %s", run_id, exc)
            return None
        raise


# The fine-tuner's own expected failures, known by name so that torch is never imported here.
_EXPECTED = {"WeightsUnavailable", "ExportError", "DataError"}


def _claim(settings: Settings, run_id: int) -> tuple[int, dict[str, Any], Path, bool] | None:
    with session_scope(settings.db_url) as session:
        run = _get_run(session, run_id)
        if run.status in (RunStatus.DONE, RunStatus.FAILED):
            return None
        resume = run.status == RunStatus.RUNNING
        if resume and not _is_stale(run, settings):
            log.warning("training run %d is already running elsewhere: skipped", run_id)
            return None
        if run.export_id is None:
            raise InvalidState(f"training run {run_id} has no export")
        run_dir = settings.data_path / "training" / f"run-{run.id}"
        resume = resume and (run_dir / "run" / "last.pth").is_file()
        run.status, run.started_at, run.run_dir = RunStatus.RUNNING, utcnow(), str(run_dir)
        run.error = None
        return run.export_id, dict(run.params), run_dir, resume


def _export_for(settings: Settings, export_id: int) -> Path:
    with session_scope(settings.db_url) as session:
        export = get_export(session, export_id)
        done = export.status == ExportStatus.DONE
    if not done:
        export = run_export(settings, export_id)
    if not export.path:
        raise InvalidState(f"export {export_id} has no folder")
    return Path(export.path)


def _read_metrics(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _publish(
    settings: Settings, run_id: int, model_dir: Path, metrics: dict[str, Any] | None
) -> int:
    """Register the model folder as a candidate version and link it to the run."""
    with session_scope(settings.db_url) as session:
        run = _get_run(session, run_id)
        run.metrics = metrics
        try:
            model = registry.add_model(
                session, settings, model_dir, name=f"run-{run_id}", source=f"training:{run_id}"
            )
            model_id = model.id
        except InvalidState as exc:  # a retried run that had already published
            if not isinstance(exc.details, dict) or "model_version_id" not in exc.details:
                raise
            model_id = int(exc.details["model_version_id"])
        run.model_version_id = model_id
        return model_id


def _record_suspects(settings: Settings, run_id: int) -> None:
    """The run's suspect labels (service/suspects.py); a failure here is logged, and leaves
    the run and its model as they are."""
    try:
        with session_scope(settings.db_url) as session:
            suspects.record_run_suspects(session, run_id, settings.label_errors_max)
    except Exception:
        log.exception("training run %d: the suspect labels could not be computed", run_id)


def _fail(settings: Settings, run_id: int, exc: BaseException) -> None:
    with session_scope(settings.db_url) as session:
        run = _get_run(session, run_id)
        run.status, run.finished_at = RunStatus.FAILED, utcnow()
        run.error = f"{type(exc).__name__}: {exc}"[:4000]


def _get_run(session: Session, run_id: int) -> TrainingRun:
    run = get_or_not_found(session, TrainingRun, run_id, "training run")
    return run


# ---------------------------------------------------------------- reading runs


def list_runs(session: Session, limit: int = 100, offset: int = 0) -> tuple[list[TrainingRun], int]:
    return newest_first(session, select(TrainingRun), TrainingRun.id, limit, offset)


def get_run(session: Session, run_id: int) -> TrainingRun:
    return _get_run(session, run_id)


def run_to_dict(run: TrainingRun, full: bool = False) -> dict[str, Any]:
    """The public JSON shape of a run: headline numbers, or everything with `full`."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    summary = None
    if run.metrics:
        summary = {
            split: {k: run.metrics[split].get(k) for k in ("n", "top1", "top3")}
            | {"macro_f1": run.metrics[split].get("macro", {}).get("f1")}
            for split in ("val", "test")
            if isinstance(run.metrics.get(split), dict)
        }
    data: dict[str, Any] = {
        "id": run.id,
        "status": run.status.value,
        "trigger": run.trigger,
        "export_id": run.export_id,
        "model_version_id": run.model_version_id,
        "params": run.params,
        "metrics": run.metrics if full else summary,
        "promotion": run.promotion if full else _promotion_summary(run.promotion),
        "error": run.error,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
    }
    return data


def _promotion_summary(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if not record:
        return None
    keys = ("passed", "promoted", "reasons", "candidate_id", "active_id", "margin")
    out = {k: record.get(k) for k in keys}
    for side in ("candidate", "active"):
        scores = record.get(side)
        out[f"{side}_macro_f1"] = scores.get("macro_f1") if scores else None
    return out
