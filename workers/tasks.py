"""Celery tasks: thin wrappers that parse ids and call one domain function."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

from celery import shared_task
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from service.broker_watch import broker_was_reset
from service.db import read_scope, session_scope
from service.errors import HerpscoreError
from service.exports import enqueue_export
from service.models import ModelVersion
from service.registry import active_model
from service.retraining import enqueue_training
from service.scanning import run_scan
from service.scheduler import requeue_stalled
from service.scoring import FileOutcome, score_chunk
from service.settings import Settings, get_settings
from service.tasks_client import (
    REQUEUE_TASK,
    SCAN_TASK,
    SCORE_TASK,
    enqueue_chunks,
    enqueue_scan,
)
from workers.engine import get_engine
from workers.pipeline import score_paths

log = logging.getLogger(__name__)
TRANSIENT = (OperationalError, BrokerError, ConnectionError, TimeoutError)
# A task that sends messages waits this long for a broker that went away, backing off, and
# then carries on: a retry through the broker would itself fail while it is down.
BROKER_PATIENCE_SECONDS = 600.0


@lru_cache(maxsize=1)
def worker_settings() -> Settings:
    return get_settings()


def run_model(model: ModelVersion, paths: Sequence[str]) -> Sequence[FileOutcome]:
    """Decode and infer `paths` with the job's pinned model version (cached session)."""
    settings = worker_settings()
    engine = get_engine(Path(model.path), threads=settings.worker_threads)
    return score_paths(
        engine,
        list(paths),
        batch_size=settings.batch_size,
        decode_threads=settings.decode_threads,
        max_pixels=settings.max_image_pixels,
        max_bytes=settings.max_file_bytes,
        max_decoded=settings.max_decoded_megabytes * 2**20,
        k=min(settings.top_k, len(engine.labels)),
    )


def patiently(send: Callable[[], None], patience: float = BROKER_PATIENCE_SECONDS) -> None:
    """Call `send`, riding out a broker outage of up to `patience` seconds with backoff."""
    deadline, delay = time.monotonic() + patience, 0.5
    while True:
        try:
            send()
            return
        except (BrokerError, ConnectionError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("broker unreachable (%s): sending again in %.1f s", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 15.0)


def warm_database() -> None:
    """Connect in a fresh worker process, so that its first task does not pay for the
    connection and the dialect's first-connect queries (about 0.1 s: a job's scan waited)."""
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
            engine = get_engine(path, threads=settings.worker_threads)
            engine.warmup(sorted({1, settings.batch_size}))
    except (SQLAlchemyError, HerpscoreError, OSError) as exc:
        # A worker must start even before the database is migrated or a model is added.
        log.warning("could not preload the active model: %s", exc)


@shared_task(
    name=SCAN_TASK,
    bind=True,
    acks_late=True,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    max_retries=5,
    soft_time_limit=6 * 3600,
)
def scan_job(self: object, job_id: int) -> None:
    settings = worker_settings()
    run_scan(settings, int(job_id), lambda ids: patiently(lambda: enqueue_chunks(settings, ids)))


@shared_task(
    name=SCORE_TASK,
    bind=True,
    acks_late=True,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    max_retries=5,
    soft_time_limit=3600,
)
def score_chunk_task(self: object, chunk_id: int) -> dict[str, int]:
    settings = worker_settings()
    result = score_chunk(settings, int(chunk_id), run_model)
    if result.split:
        log.warning("chunk %s was interrupted before: split into %s", chunk_id, result.split)
        patiently(lambda: enqueue_chunks(settings, result.split))
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
    enqueue_chunks(settings, resend.chunks)
    for job_id in resend.scans:
        enqueue_scan(settings, job_id)
    for export_id in resend.exports:
        enqueue_export(settings, export_id)
    for run_id in resend.runs:
        enqueue_training(settings, run_id)
    counts = resend.counts()
    if any(counts.values()):
        log.warning(
            "re-sent %d stalled chunks, %d scans, %d exports and %d training runs%s",
            *counts.values(), " (the broker was away)" if reset else "",
        )  # fmt: skip
    return counts
