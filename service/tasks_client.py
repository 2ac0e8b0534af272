"""The Celery client: every task name, and `enqueue`, the one place that sends a task."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from celery import Celery
from kombu import Exchange, Queue
from kombu.exceptions import OperationalError as KombuOperationalError

from service import fs_broker
from service.settings import Settings

fs_broker.install()  # the embedded broker's message files are written atomically

log = logging.getLogger(__name__)

QUEUES = ("scan", "inference", "export", "training", "maintenance")
SCAN_TASK = "herpscore.scan_job"
SCORE_TASK = "herpscore.score_chunk"
REQUEUE_TASK = "herpscore.requeue_stalled"
EXPORT_TASK = "herpscore.export"
TRAIN_TASK = "herpscore.train"
RETRAIN_CHECK_TASK = "herpscore.retrain_check"
RENDER_THUMBNAIL_TASK = "herpscore.render_thumbnail"
RENDER_DISPLAY_TASK = "herpscore.render_display"
TASK_ROUTES = {
    SCAN_TASK: {"queue": "scan"},
    SCORE_TASK: {"queue": "inference"},
    REQUEUE_TASK: {"queue": "maintenance"},
    RETRAIN_CHECK_TASK: {"queue": "maintenance"},
    # A copy the web asked for: the web process never decodes a photo (service/copies.py).
    RENDER_THUMBNAIL_TASK: {"queue": "maintenance"},
    RENDER_DISPLAY_TASK: {"queue": "maintenance"},
    TRAIN_TASK: {"queue": "training"},
    EXPORT_TASK: {"queue": "export"},
}
# What each task's id argument names, for the answer a caller shows.
SUBJECTS = {
    SCAN_TASK: "job",
    SCORE_TASK: "chunk",
    EXPORT_TASK: "export",
    TRAIN_TASK: "training run",
    RENDER_THUMBNAIL_TASK: "image",
    RENDER_DISPLAY_TASK: "image",
}
# A broker that is down or unreachable: kombu wraps its transports' connection errors in its
# OperationalError; a socket error can still escape as ConnectionError or TimeoutError.
BROKER_ERRORS = (KombuOperationalError, ConnectionError, TimeoutError)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by the client and the workers (late acks, one prefetch)."""
    transport: dict[str, Any] = {
        "visibility_timeout": settings.broker_visibility_timeout,
        # Redis: look for messages of dead workers every 10 s (kombu's default sweep runs
        # every 10 x 10 s, so a killed worker's chunks would wait ~100 s past the timeout).
        "unacked_restore_interval": min(10, settings.broker_visibility_timeout),
        "unacked_restore_throttle": 1,
    }
    if settings.broker_key_prefix:
        # Redis: every key of this stack starts with the prefix, so two stacks (or two test
        # runs) can share one Redis server and database without taking each other's messages.
        transport["global_keyprefix"] = settings.broker_key_prefix
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
        # The filesystem broker is polled: a pool process that finishes a chunk would wait up
        # to a polling interval for its next message, several times per small job. Holding one
        # more message per process hides that wait (a free process takes it at once); Redis
        # delivers on the ack, and a message held there is one another worker cannot take.
        "worker_prefetch_multiplier": 2 if settings.is_embedded_broker else 1,
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
                "task": RETRAIN_CHECK_TASK,
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


@dataclass(frozen=True)
class Enqueued:
    """What became of a send: every message queued, or the work recorded and waiting for
    the broker (the scheduler sends it once the broker answers again)."""

    task: str
    ids: tuple[int, ...]
    waiting: tuple[int, ...] = ()
    error: str | None = None

    @property
    def queued(self) -> bool:
        return not self.waiting

    @property
    def message(self) -> str:
        subject = SUBJECTS.get(self.task, "task")
        ids = self.waiting or self.ids
        what = f"{subject} {ids[0]}" if len(ids) == 1 else f"{len(ids)} {subject}s"
        if self.queued:
            return f"{what} queued"
        return (
            f"{what} recorded and waiting for the broker, which is unreachable "
            f"({self.error}); it is sent as soon as the broker answers again"
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields an API answer adds: `queued`, `waiting_for_broker`, `message`."""
        waiting = not self.queued
        return {"queued": self.queued, "waiting_for_broker": waiting, "message": self.message}


def enqueue(settings: Settings, task: str, ids: Iterable[int]) -> Enqueued:
    """Send `task` once per id (each message carries one id); never raises for a broker
    outage: the ids not sent come back in `waiting`. Call only after the rows committed.

    Every kind of work is a row first, so nothing is lost: the scheduler's requeue check
    re-sends queued work whose message never left.
    """
    if task not in TASK_ROUTES:
        raise ValueError(f"unknown task {task!r}")
    ids = tuple(ids)
    app = celery_client(settings)
    for done, task_id in enumerate(ids):
        try:
            app.send_task(task, args=[task_id])
        except BROKER_ERRORS as exc:
            outcome = Enqueued(task, ids, waiting=ids[done:], error=str(exc) or type(exc).__name__)
            log.warning("%s (%s)", outcome.message, task)
            return outcome
    return Enqueued(task, ids)
