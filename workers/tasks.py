"""Celery tasks: thin wrappers that parse ids and call one domain function."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from celery import shared_task
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from service import copies
from service.broker_watch import broker_was_reset
from service.db import read_scope, session_scope
from service.display import DISPLAY_SIDE
from service.errors import HerpscoreError
from service.logs import work_context
from service.models import ModelVersion
from service.monitoring import count_outcomes
from service.registry import active_model
from service.scanning import run_scan
from service.scheduler import requeue_stalled
from service.scoring import FileOutcome, score_chunk
from service.settings import Settings, get_settings
from service.tasks_client import (
    EXPORT_TASK,
    RENDER_DISPLAY_TASK,
    RENDER_THUMBNAIL_TASK,
    REQUEUE_TASK,
    SCAN_TASK,
    SCORE_TASK,
    TRAIN_TASK,
    enqueue,
)
from service.thumbnails import THUMBNAIL_SIDE
from workers import memory_guard
from workers.engine import CPU, InferenceEngine, get_engine
from workers.pipeline import DECODE_THREADS, score_paths

log = logging.getLogger(__name__)
TRANSIENT = (OperationalError, BrokerError, ConnectionError, TimeoutError)
# Late acks, and retries with backoff for the named transient errors only. A database or
# broker outage (a restart, a failover) is ridden out: retries 1, 2, 4, ... s apart, at most
# RETRY_BACKOFF_MAX, without jitter, for about 10 minutes in all; past that the scheduler's
# lease takes over. Five jittered retries were spent in 7 s of a 10 s PostgreSQL restart,
# which left a chunk queued for the 900 s lease (benchmarks/crash_drill.py).
RETRY_BACKOFF_MAX = 30
RETRY_TRANSIENT: dict[str, Any] = {
    "acks_late": True,
    "autoretry_for": TRANSIENT,
    "retry_backoff": True,
    "retry_backoff_max": RETRY_BACKOFF_MAX,
    "retry_jitter": False,
    "max_retries": 25,
}


@lru_cache(maxsize=1)
def worker_settings() -> Settings:
    return get_settings()


def serving_engine(settings: Settings, model_dir: Path) -> InferenceEngine:
    """This process's cached engine for a model, on the device and file the settings ask."""
    return get_engine(
        model_dir,
        threads=settings.worker_threads,
        prefer_int8=settings.serve_int8,
        device=settings.inference_device,
    )


def decode_threads(settings: Settings, engine: InferenceEngine) -> int:
    """The setting, or by default none (decoding in turn with inference) when scoring on
    the CPU with a process per core, else DECODE_THREADS.

    A process that has one core to itself gains nothing from decoding in threads beside
    ONNX Runtime: the two only take turns on that core, and the switching costs CPU
    (docs/performance.md, "A seventh machine").
    """
    if settings.decode_threads is not None:
        return settings.decode_threads
    per_core = settings.worker_processes >= (os.cpu_count() or 1)
    return 0 if per_core and engine.providers[0] == CPU else DECODE_THREADS


def run_model(model: ModelVersion, paths: Sequence[str]) -> Sequence[FileOutcome]:
    """Decode and infer `paths` with the job's pinned model version (cached session)."""
    settings = worker_settings()
    engine = serving_engine(settings, Path(model.path))
    outcomes = score_paths(
        engine,
        list(paths),
        batch_size=settings.batch_size,
        decode_threads=decode_threads(settings, engine),
        max_pixels=settings.max_image_pixels,
        max_bytes=settings.max_file_bytes,
        max_decoded=settings.max_decoded_megabytes * 2**20,
        k=min(settings.top_k, len(engine.labels)),
        keep_above=settings.venom_alert,
        thumbnail_side=THUMBNAIL_SIDE if settings.thumbnails_when_scoring else None,
    )
    count_outcomes([outcome.failure_reason for outcome in outcomes])
    return outcomes


def warm_database() -> None:
    """Connect in a fresh worker process, so that its first task (often a job's scan) does
    not wait for the connection and the dialect's first-connect queries."""
    try:
        with read_scope(worker_settings().db_url) as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        log.warning("could not connect to the database yet: %s", exc)


def preload_active_model() -> None:
    """Open and warm the active model's session in a fresh worker process, so the first
    chunk of the next job does not pay for it. Nothing to do without an active model."""
    settings = worker_settings()
    try:
        with read_scope(settings.db_url) as session:
            model = active_model(session)
            path = Path(model.path) if model else None
        if path is not None:
            engine = serving_engine(settings, path)
            log.info("model %s on %s: %s", path.name, engine.providers[0], engine.onnx_path.name)
            engine.warmup(sorted({1, settings.batch_size}))
    except (SQLAlchemyError, HerpscoreError, OSError) as exc:
        # A worker must start even before the database is migrated or a model is added.
        log.warning("could not preload the active model: %s", exc)


@shared_task(
    name=SCAN_TASK,
    bind=True,
    **RETRY_TRANSIENT,
    soft_time_limit=6 * 3600,
)
def scan_job(self: object, job_id: int) -> None:
    settings = worker_settings()
    # A broker outage mid-scan does not stop it: the committed chunks wait for the requeue.
    with work_context(job_id=int(job_id)):
        run_scan(settings, int(job_id), lambda ids: enqueue(settings, SCORE_TASK, ids))


@shared_task(
    name=SCORE_TASK,
    bind=True,
    **RETRY_TRANSIENT,
    soft_time_limit=3600,
)
def score_chunk_task(self: object, chunk_id: int) -> dict[str, int]:
    with work_context(chunk_id=int(chunk_id)), memory_guard.armed():
        return _score_chunk(int(chunk_id))


def _score_chunk(chunk_id: int) -> dict[str, int]:
    settings = worker_settings()
    result = score_chunk(settings, chunk_id, run_model)
    if result.split:
        log.warning("chunk %s was interrupted before: split into %s", chunk_id, result.split)
        enqueue(settings, SCORE_TASK, result.split)
    log.info(
        "chunk %s (pid %s): %d scored, %d failed, %d routed; seconds %s",
        chunk_id, os.getpid(), result.scored, result.failed, result.routed, result.seconds,
    )  # fmt: skip
    return {"scored": result.scored, "failed": result.failed, "routed": result.routed}


@shared_task(name=REQUEUE_TASK, acks_late=True, autoretry_for=TRANSIENT, max_retries=3)
def requeue_stalled_task() -> dict[str, int]:
    settings = worker_settings()
    reset = broker_was_reset(settings)
    with session_scope(settings.db_url) as session:
        resend = requeue_stalled(session, settings, broker_reset=reset)
    enqueue(settings, SCORE_TASK, resend.chunks)
    enqueue(settings, SCAN_TASK, resend.scans)
    enqueue(settings, EXPORT_TASK, resend.exports)
    enqueue(settings, TRAIN_TASK, resend.runs)
    counts = resend.counts()
    if any(counts.values()):
        log.warning(
            "re-sent %d stalled chunks, %d scans, %d exports and %d training runs%s",
            *counts.values(), " (the broker was away)" if reset else "",
        )  # fmt: skip
    # After the re-sends, so an unwritable cache folder never holds up lost work.
    counts["markers_swept"] = copies.sweep_markers(settings)
    return counts


# Acked on receipt, unlike the others: a photo whose decode gets its process killed (the
# memory guard) must not be redelivered forever. A lost render is asked for again by the
# next page view once its pending marker is a minute old (service/copies.py).
RENDER: dict[str, Any] = {**RETRY_TRANSIENT, "acks_late": False, "soft_time_limit": 300}


@shared_task(name=RENDER_THUMBNAIL_TASK, **RENDER)
def render_thumbnail_task(image_id: int) -> bool:
    with memory_guard.armed():
        return copies.render_copy(worker_settings(), int(image_id), THUMBNAIL_SIDE)


@shared_task(name=RENDER_DISPLAY_TASK, **RENDER)
def render_display_task(image_id: int) -> bool:
    with memory_guard.armed():
        return copies.render_copy(worker_settings(), int(image_id), DISPLAY_SIDE)
