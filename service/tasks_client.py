"""The Celery client built from settings: the web side and the CLI send tasks by name only."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from service.settings import Settings

QUEUES = ("scan", "inference", "export", "training", "maintenance")
SCAN_TASK = "herpscore.scan_job"
SCORE_TASK = "herpscore.score_chunk"
REQUEUE_TASK = "herpscore.requeue_stalled"
TASK_ROUTES = {
    SCAN_TASK: {"queue": "scan"},
    SCORE_TASK: {"queue": "inference"},
    REQUEUE_TASK: {"queue": "maintenance"},
    "herpscore.train": {"queue": "training"},
    "herpscore.export": {"queue": "export"},
}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by the client and the workers (late acks, one prefetch)."""
    transport: dict[str, Any] = {
        "visibility_timeout": settings.broker_visibility_timeout,
        # Redis: look for messages of dead workers every 10 s (kombu's default sweep runs
        # every 10 x 10 s, so a killed worker's chunks would wait ~100 s past the timeout).
        "unacked_restore_interval": min(10, settings.broker_visibility_timeout),
        "unacked_restore_throttle": 1,
    }
    if settings.is_embedded_broker:
        folder = settings.broker_folder
        transport.update(
            data_folder_in=str(folder / "in"),
            data_folder_out=str(folder / "in"),
            processed_folder=str(folder / "processed"),
            control_folder=str(folder / "control"),
            store_processed=False,
            polling_interval=0.1,  # the default 1 s idles a worker between short chunks
        )
    return {
        "broker_url": settings.celery_broker_url,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A pool process that grew past the ceiling (a heap fragmented by huge decodes) is
        # replaced after its task; decoding itself is bounded by max_decoded_megabytes.
        "worker_max_memory_per_child": settings.worker_max_memory_megabytes * 1024 or None,
        # A pool process opens and warms the active model before it says it is up.
        "worker_proc_alive_timeout": 120,
        "task_queues": [Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        "task_default_queue": "inference",
        "task_routes": TASK_ROUTES,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_hijack_root_logger": False,
        "beat_schedule": {
            "requeue-stalled": {"task": REQUEUE_TASK, "schedule": settings.stalled_check_seconds},
            "retrain-check": {
                "task": "herpscore.retrain_check",
                "schedule": settings.retrain_interval_seconds,
                "options": {"queue": "maintenance"},
            },
        },
    }


@lru_cache(maxsize=4)
def _client(settings_json: str) -> Celery:
    settings = Settings.model_validate_json(settings_json)
    if settings.is_embedded_broker:
        settings.ensure_dirs()
    app = Celery("herpscore-client", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def celery_client(settings: Settings) -> Celery:
    """A Celery app that only sends tasks (cached per settings)."""
    return _client(settings.model_dump_json())


def enqueue_scan(settings: Settings, job_id: int) -> None:
    """Queue the scan of a job; call only after the transaction that created it committed."""
    celery_client(settings).send_task(SCAN_TASK, args=[job_id])


def enqueue_chunks(settings: Settings, chunk_ids: list[int]) -> None:
    """Queue score tasks; call only after the chunks' rows committed."""
    app = celery_client(settings)
    for chunk_id in chunk_ids:
        app.send_task(SCORE_TASK, args=[chunk_id])
