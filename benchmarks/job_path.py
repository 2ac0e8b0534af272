"""(c) of the scoring benchmark: herpscore end to end through the real job path.

A fresh database, the model registered and activated, the Celery workers `herpscore up`
runs (prefork; scoring: one process per core, one ORT thread each; scanning in a second
worker) on a real broker, and a job created exactly as the API creates it. `layout="single"`
runs the earlier layout instead, one worker consuming every queue, for comparison.
The rate is images / (job finished_at - job created_at), both written by the database, so
scanning, hashing, EXIF, dispatch, inference and every write count.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger("bench_scoring.job_path")
PG_ADMIN = os.environ.get("HERPSCORE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("HERPSCORE_BENCH_REDIS", "redis://127.0.0.1:6379/14")


def timeline(session: Any, job: Any) -> dict[str, float]:
    """Where a job's time went, from the rows it left: queueing, scanning, the last chunk."""
    from sqlalchemy import func, select

    from service.models import Chunk

    first_cut, last_cut, first_done = session.execute(
        select(func.min(Chunk.enqueued_at), func.max(Chunk.enqueued_at),
               func.min(Chunk.finished_at)).where(Chunk.job_id == job.id)
    ).one()  # fmt: skip

    def since_created(moment: Any) -> float:
        return round((moment - job.created_at).total_seconds(), 3) if moment else -1.0

    return {
        "scan_started": since_created(job.started_at),
        "first_chunk_cut": since_created(first_cut),
        "last_chunk_cut": since_created(last_cut),
        "first_chunk_done": since_created(first_done),
        "chunks": session.scalar(select(func.count()).where(Chunk.job_id == job.id)),
        "chunk_done_at": [
            since_created(t)
            for t in session.scalars(
                select(Chunk.finished_at).where(Chunk.job_id == job.id).order_by(Chunk.finished_at)
            )
        ],
    }


@contextmanager
def fresh_backend(work: Path, backend: str) -> Iterator[dict[str, Any]]:
    """Settings overrides for an empty database and broker: PostgreSQL + Redis, or embedded."""
    if backend == "embedded":
        data = work / f"embedded-{uuid.uuid4().hex[:8]}"
        yield {"data_dir": data, "database_url": None, "broker_url": None}
        return
    import psycopg
    import redis

    name = f"herpscore_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    redis.Redis.from_url(REDIS).flushdb()
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield {"data_dir": work / "pg-data", "database_url": f"{base}/{name}", "broker_url": REDIS}
    finally:
        from service.db import dispose_engines

        dispose_engines()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure_job_path(
    folder: Path,
    model_dir: Path,
    work: Path,
    *,
    backend: str = "postgres",
    processes: int = 2,
    overrides: dict[str, Any] | None = None,
    layout: str = "split",
) -> dict[str, float]:
    """Score `folder` once through a job; returns images/s and the job's own timings."""
    from service.cli import EMBEDDED_WORKERS, embedded_worker
    from service.db import session_scope
    from service.jobs import create_job, get_job, job_progress
    from service.migrate import upgrade
    from service.models import JobStatus
    from service.registry import add_model
    from service.settings import Settings
    from service.tasks_client import enqueue_scan

    with fresh_backend(work, backend) as backend_settings:
        settings = Settings(
            allowed_roots=[folder.parent],
            worker_concurrency=processes,
            **backend_settings,
            **(overrides or {}),
        )
        settings.ensure_dirs()
        upgrade(settings.db_url)
        with session_scope(settings.db_url) as session:
            add_model(session, settings, model_dir, activate=True)
        pools = EMBEDDED_WORKERS
        if layout == "single":
            pools = (("all", ("scan", "inference", "maintenance"), processes),)
        with embedded_worker(settings, pools=pools):
            time.sleep(6)  # the worker imports and connects before the clock starts
            with session_scope(settings.db_url) as session:
                job_id = create_job(session, settings, str(folder)).id
            enqueue_scan(settings, job_id)
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline:
                with session_scope(settings.db_url) as session:
                    job = get_job(session, job_id)
                    if job.status not in (JobStatus.QUEUED, JobStatus.SCANNING, JobStatus.SCORING):
                        break
                time.sleep(0.05)
            with session_scope(settings.db_url) as session:
                job = get_job(session, job_id)
                progress = job_progress(job)
                assert job.status == JobStatus.DONE, f"job ended {job.status}: {job.error}"
                assert job.finished_at is not None
                wall = (job.finished_at - job.created_at).total_seconds()
                return {
                    "images": progress["scored"] + progress["failed"],
                    "failed": progress["failed"],
                    "seconds": wall,
                    "rate": (progress["scored"] + progress["failed"]) / wall,
                    **timeline(session, job),
                }
