"""The workers' Celery app, configured from the same settings and config as the client."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    beat_init,
    celeryd_after_setup,
    worker_process_init,
)

from service.db import dispose_engines
from service.processes import SchedulerRunning, hold_scheduler_lock
from service.settings import get_settings
from service.tasks_client import celery_config
from workers import broker_compat, memory_guard


def make_app() -> Celery:
    broker_compat.install()
    settings = get_settings()
    if settings.is_embedded_broker:
        settings.ensure_dirs()
    celery = Celery("herpscore", include=["workers.tasks", "workers.training_tasks"])
    celery.conf.update(celery_config(settings))
    return celery


app = make_app()
log = logging.getLogger(__name__)
_held: list[int] = []  # the scheduler lock's descriptor, kept open for the process's life


@after_setup_logger.connect
@after_setup_task_logger.connect
def _json_logs(logger: logging.Logger, **_: object) -> None:
    from service.logs import configure_logging

    configure_logging(get_settings(), logger)


_scores = True  # does this worker consume the inference queue? (set before the pool forks)


@celeryd_after_setup.connect
def _note_queues(instance: Any, **_: object) -> None:
    global _scores
    consumed = instance.app.amqp.queues.consume_from  # None: every queue
    _scores = not consumed or "inference" in consumed


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    # Connections and ONNX sessions must never cross a fork: drop inherited pools.
    dispose_engines()
    logging.getLogger("herpscore").setLevel(logging.INFO)
    from workers.tasks import preload_active_model, warm_database

    if _scores:
        memory_guard.start(get_settings().worker_kill_memory_megabytes)
        preload_active_model()  # connects to the database too
    else:  # a scan/export/training worker would only hold the session's memory
        warm_database()


@beat_init.connect
def _one_scheduler_per_schedule(sender: Any = None, **_: object) -> None:
    # Two schedulers would send every periodic task twice and share one schedule file: a
    # second one (a restart while the old stack still shuts down) waits for the first.
    # The lock sits by the schedule file: `herpscore up` keeps it in the data dir, compose
    # on the beat volume.
    schedule = getattr(sender, "schedule_filename", None)
    if schedule:
        lock = Path(f"{schedule}.lock")
    else:
        lock = get_settings().data_path / "celerybeat-schedule.lock"
    try:
        _held.append(hold_scheduler_lock(lock, wait=False))
    except SchedulerRunning as exc:
        log.warning("%s: this scheduler waits until it stops", exc)
        _held.append(hold_scheduler_lock(lock, wait=True))
