"""Celery tasks of the loop's second half: export, the retrain check, and training.

Thin like workers.tasks. torch is imported only inside the train task (lazily), so an
inference worker that merely registers these tasks never loads it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from celery import shared_task

from service import retraining, training_stack
from service.db import session_scope
from service.errors import InvalidState
from service.exports import run_export
from service.promotion import Predictor
from service.settings import Settings
from service.tasks_client import EXPORT_TASK, RETRAIN_CHECK_TASK, TRAIN_TASK, enqueue
from workers.engine import InferenceEngine
from workers.pipeline import DECODE_THREADS, score_paths
from workers.tasks import RETRY_TRANSIENT, worker_settings

log = logging.getLogger(__name__)


@shared_task(
    name=EXPORT_TASK,
    **RETRY_TRANSIENT,
    soft_time_limit=6 * 3600,
)
def export_task(export_id: int) -> dict[str, Any]:
    export = run_export(worker_settings(), int(export_id))
    return {"export_id": export.id, "status": export.status.value}


@shared_task(
    name=RETRAIN_CHECK_TASK,
    **RETRY_TRANSIENT,
)
def retrain_check_task(force: bool = False) -> dict[str, Any]:
    settings = worker_settings()
    with session_scope(settings.db_url) as session:
        result = retraining.retrain_check(session, settings, force=bool(force))
    if result.run_id is not None:
        enqueue(settings, TRAIN_TASK, [result.run_id])
    log.info("retrain check: %s", result.reason)
    return result.to_dict()


# No autoretry: a retry would look like a live duplicate; a failed run is marked failed and
# the next check starts a fresh one.
@shared_task(name=TRAIN_TASK, acks_late=True, soft_time_limit=48 * 3600)
def train_task(run_id: int) -> dict[str, Any] | None:
    settings = worker_settings()
    run = retraining.run_training(settings, int(run_id), fit_model, label_predictor(settings))
    return None if run is None else {"run_id": run.id, "status": run.status.value}


def fit_model(argv: list[str]) -> Path:
    """`python -m training fit ARGV` in this process; returns the model folder."""
    try:
        from training.fit import get_args_parser, main
    except ModuleNotFoundError as exc:  # a worker installed without the [train] extra
        raise InvalidState(f"{training_stack.MISSING} (this worker: {exc})") from None

    root = logging.getLogger()
    before = list(root.handlers)
    try:
        return main(get_args_parser().parse_args(argv))
    finally:
        # fit logs into its run folder through a root handler: drop it, or every later
        # run in this worker process would also write into this run's train.log.
        for handler in root.handlers[len(before) :]:
            root.removeHandler(handler)
            handler.close()


def label_predictor(settings: Settings) -> Predictor:
    """Top-1 labels through the served path (shared preprocessing + ONNX Runtime)."""

    def predict(model_dir: Path, paths: list[str]) -> Sequence[str | None]:
        # A fresh engine, not the worker's cache: a candidate is judged once.
        engine = InferenceEngine(model_dir, threads=settings.worker_threads)
        results = score_paths(
            engine,
            paths,
            batch_size=settings.batch_size,
            # One process on every core, judging a candidate: decoding overlaps inference.
            decode_threads=(
                DECODE_THREADS if settings.decode_threads is None else settings.decode_threads
            ),
            max_pixels=settings.max_image_pixels,
            max_bytes=settings.max_file_bytes,
            k=1,
        )
        return [r.label for r in results]

    return predict
