"""The workers' Celery app, configured from the same settings and config as the client."""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import worker_process_init

from service.db import dispose_engines
from service.settings import get_settings
from service.tasks_client import celery_config


def make_app() -> Celery:
    settings = get_settings()
    if settings.is_embedded_broker:
        settings.ensure_dirs()
    celery = Celery("herpscore", include=["workers.tasks", "workers.training_tasks"])
    celery.conf.update(celery_config(settings))
    return celery


app = make_app()


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    # Connections and ONNX sessions must never cross a fork: drop inherited pools.
    dispose_engines()
    logging.getLogger("herpscore").setLevel(logging.INFO)
    from workers.tasks import preload_active_model

    preload_active_model()
