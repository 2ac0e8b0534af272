"""(c) of the scoring benchmark: herpscore end to end through the real job path.

A fresh database, the model registered and activated, the Celery workers `herpscore up`
runs (prefork; scoring: one process per core, one ORT thread each; scanning in a second
worker) on a real broker, and a job created exactly as the API creates it.
The rate is images / (job finished_at - job created_at), both written by the database, so
scanning, hashing, EXIF, dispatch, inference and every write count. Where the CPU went is
read from /proc for each group of processes (scoring workers, scan worker, PostgreSQL, ...)
over the job's lifetime: milliseconds of CPU per image, comparable with 2 cores / L.
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
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CPU_GROUPS = (  # (substring of a process's command line, group), first match wins
    ("inference@", "scoring workers"),
    ("tasks@", "scan worker"),
    ("postgres", "postgresql"),
    ("redis-server", "redis"),
)
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


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """Every process's (group, user + system CPU seconds so far), from /proc (Linux)."""
    seen: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as fh:
                stat = fh.read()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone, or not ours to read
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # utime, stime: fields 14, 15 of stat
        group = next((g for key, g in CPU_GROUPS if key in cmdline), "other")
        seen[int(entry)] = (group, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return seen


def cpu_ms_per_image(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], images: int
) -> dict[str, float]:
    """CPU milliseconds per image spent by each process group between two snapshots."""
    spent: dict[str, float] = {}
    for pid, (group, seconds) in after.items():
        spent[group] = spent.get(group, 0.0) + seconds - before.get(pid, (group, 0.0))[1]
    return {g: round(1e3 * s / max(images, 1), 3) for g, s in sorted(spent.items()) if s > 0}


@contextmanager
def fresh_pg_database(prefix: str, admin: str = PG_ADMIN) -> Iterator[str]:
    """The SQLAlchemy URL of a new, empty PostgreSQL database on `admin`'s server, dropped after."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        from service.db import dispose_engines

        dispose_engines()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_backend(work: Path, backend: str) -> Iterator[dict[str, Any]]:
    """Settings overrides for an empty database and broker: PostgreSQL + Redis, or embedded."""
    if backend == "embedded":
        data = work / f"embedded-{uuid.uuid4().hex[:8]}"
        yield {"data_dir": data, "database_url": None, "broker_url": None}
        return
    import redis

    redis.Redis.from_url(REDIS).flushdb()
    with fresh_pg_database("herpscore_bench") as url:
        yield {"data_dir": work / "pg-data", "database_url": url, "broker_url": REDIS}


def warm_client(settings: Any) -> None:
    """Connect the Celery client and declare its queues, as a running API server has done
    since its first job. A cold client's first send costs ~120 ms here (imports, connection,
    declarations): 2 % of a 5-second job, paid once per server process, not per job."""
    from service.tasks_client import celery_client

    app = celery_client(settings)
    with app.producer_or_acquire() as producer:
        producer.connection.ensure_connection()
        for queue in app.amqp.queues.values():
            queue(producer.channel).declare()


WARMUP_FILES = 16


def warmup_folder(folder: Path, work: Path) -> Path:
    """Copies of the first WARMUP_FILES photos of `folder`, for the workers' warm-up job.

    Each copy gets a few bytes after the JPEG's end (decoders ignore them) so that its
    sha256 differs: a byte-identical copy would make the measured job's first photos byte
    twins of the warm-up's, replayed without running the model.
    """
    target = work / "warmup" / folder.name
    target.mkdir(parents=True, exist_ok=True)
    for old in target.iterdir():
        old.unlink()
    for source in sorted(folder.rglob("*.jpg"))[:WARMUP_FILES]:
        (target / source.name).write_bytes(source.read_bytes() + b"warm-up copy")
    return target


def measure_job_path(
    folder: Path,
    model_dir: Path,
    work: Path,
    *,
    backend: str = "postgres",
    processes: int = 2,
    overrides: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Score `folder` once through a job; returns images/s and the job's own timings.

    Before the clock starts, the workers run a warm-up job over copies of the folder's
    first `WARMUP_FILES` photos (other paths and bytes, so nothing of it is reused): a long-running
    worker has done that, and a fresh one pays Python's first-time costs (SQLAlchemy
    compiling each statement, lazy imports, first ORT runs) on its first job only.
    """
    from service.cli import embedded_worker
    from service.db import session_scope
    from service.jobs import create_job, get_job, job_progress
    from service.migrate import upgrade
    from service.models import JobStatus
    from service.registry import add_model
    from service.settings import Settings
    from service.tasks_client import SCAN_TASK, enqueue

    with fresh_backend(work, backend) as backend_settings:
        warmup = warmup_folder(folder, work)
        settings = Settings(
            allowed_roots=[folder.parent, warmup.parent],
            worker_concurrency=processes,
            **backend_settings,
            **(overrides or {}),
        )
        settings.ensure_dirs()
        upgrade(settings.db_url)
        with session_scope(settings.db_url) as session:
            add_model(session, settings, model_dir, activate=True)
        with embedded_worker(settings):
            time.sleep(6)  # the worker imports and connects before the clock starts
            warm_client(settings)  # so does a running API server's Celery client

            def run_job(target: Path) -> int:
                with session_scope(settings.db_url) as session:
                    job_id = create_job(session, settings, str(target)).id
                enqueue(settings, SCAN_TASK, [job_id])
                deadline = time.monotonic() + 3600
                while time.monotonic() < deadline:
                    with session_scope(settings.db_url) as session:
                        status = get_job(session, job_id).status
                    if status not in (JobStatus.QUEUED, JobStatus.SCANNING, JobStatus.SCORING):
                        break
                    # The job's own timestamps are the clock, so polling fast gains nothing
                    # and would take CPU from the job (at 50 ms: about 0.3 ms per image).
                    time.sleep(0.5)
                return job_id

            run_job(warmup)
            cpu_before = cpu_seconds()
            job_id = run_job(folder)
            cpu_after = cpu_seconds()
            with session_scope(settings.db_url) as session:
                job = get_job(session, job_id)
                progress = job_progress(job)
                assert job.status == JobStatus.DONE, f"job ended {job.status}: {job.error}"
                assert job.finished_at is not None
                wall = (job.finished_at - job.created_at).total_seconds()
                images = progress["scored"] + progress["failed"]
                return {
                    "images": images,
                    "failed": progress["failed"],
                    "seconds": wall,
                    "rate": images / wall,
                    # Counted until the poll saw the job end: up to 0.5 s of idle cores more.
                    "cpu_ms_per_image": cpu_ms_per_image(cpu_before, cpu_after, images),
                    **timeline(session, job),
                }
