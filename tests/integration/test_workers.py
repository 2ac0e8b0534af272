"""Real Celery worker processes on real PostgreSQL and Redis: a job end to end, and a crash."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.cli import settings_env
from service.db import session_scope
from service.jobs import create_job, get_job
from service.models import Chunk, JobStatus, Prediction
from service.registry import add_model
from service.scanning import run_scan
from service.settings import Settings
from service.tasks_client import SCAN_TASK, SCORE_TASK, enqueue
from tests.support.models import make_model_folder
from tests.support.photos import make_photo_folder

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def start_worker(
    settings: Settings, log: Path, concurrency: int = 2, beat: Path | None = None
) -> subprocess.Popen[bytes]:
    """A real worker process; with `beat` (a schedule file), the scheduler rides with it,
    as in `herpscore up` and docker compose."""
    env = dict(os.environ)
    env.update(settings_env(settings))
    cmd = [
        sys.executable, "-m", "celery", "--quiet", "-A", "workers", "worker",
        "-Q", "scan,inference,maintenance", "--concurrency", str(concurrency),
        "--loglevel", "INFO", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    if beat is not None:
        cmd += ["--beat", "--schedule", str(beat)]
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=60)


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    log: Path,
    state: Callable[[], object] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    pytest.fail(
        f"timed out after {timeout:.0f} s waiting for {what}; {state()}\nworker log:\n{tail}"
    )


@pytest.fixture()
def stack(pg_url, redis_broker, make_settings, tmp_path) -> Iterator[Callable[..., Settings]]:
    """Settings on PostgreSQL + Redis with an active tiny model."""

    def build(**overrides: object) -> Settings:
        settings = make_settings(pg_url, **redis_broker, **overrides)
        model_dir = make_model_folder(tmp_path / "model", labels=["red", "green", "blue"])
        with session_scope(settings.db_url) as session:
            add_model(session, settings, model_dir, activate=True)
        return settings

    yield build


def submit(settings: Settings, folder: str) -> int:
    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, folder).id
    assert enqueue(settings, SCAN_TASK, [job_id]).queued
    return job_id


def job_state(settings: Settings, job_id: int) -> tuple[JobStatus, int, int, int]:
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id)
        return job.status, job.total, job.scored, job.failed


def test_real_worker_scores_a_folder(stack, photos_root, tmp_path):
    settings = stack(chunk_size=8)
    make_photo_folder(photos_root / "survey", count=40)
    (photos_root / "survey" / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log)
    try:
        job_id = submit(settings, "survey")
        wait_until(lambda: job_state(settings, job_id)[0] == JobStatus.DONE, 120, "done", log)
    finally:
        stop(worker)
    _, total, scored, failed = job_state(settings, job_id)
    assert (total, scored, failed) == (41, 40, 1)
    with session_scope(settings.db_url) as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 40


def chunk_states(settings: Settings, job_id: int) -> str:
    with session_scope(settings.db_url) as session:
        rows = session.execute(
            select(Chunk.status, func.count()).where(Chunk.job_id == job_id).group_by(Chunk.status)
        ).all()
    return "chunks: " + ", ".join(f"{status.value} {n}" for status, n in rows)


def wait_until_done(settings: Settings, job_id: int, log: Path, timeout: float) -> None:
    """Wait for the job to be done; on a timeout, say where its chunks stand."""
    wait_until(
        lambda: job_state(settings, job_id)[0] == JobStatus.DONE,
        timeout,
        "done",
        log,
        lambda: chunk_states(settings, job_id),
    )


def test_worker_killed_mid_job_loses_nothing(stack, photos_root, tmp_path):
    # kill -9 can lose a message outright: kombu's Redis transport pops it (BRPOP) before
    # it records it as unacknowledged, so a kill between the two drops it. The scheduler's
    # requeue_stalled re-sends a chunk still queued after its lease; the second worker runs
    # the scheduler, as every deployment does, with a lease of seconds instead of minutes.
    settings = stack(
        chunk_size=2, broker_visibility_timeout=3, chunk_lease_seconds=5, stalled_check_seconds=1
    )
    count = 120
    make_photo_folder(photos_root / "big", count=count, size=(320, 240))
    log = tmp_path / "worker.log"
    first = start_worker(settings, log)
    try:
        job_id = submit(settings, "big")
        wait_until(lambda: job_state(settings, job_id)[2] >= 10, 120, "first chunks", log)
    finally:
        stop(first, signal.SIGKILL)  # kill -9 the whole worker: main process and pool
    status, total, scored, _ = job_state(settings, job_id)
    assert status != JobStatus.DONE and scored < count, "the kill came too late to test anything"

    second = start_worker(settings, log, beat=tmp_path / "celerybeat-schedule")
    try:
        wait_until_done(settings, job_id, log, 180)
    finally:
        stop(second)
    status, total, scored, failed = job_state(settings, job_id)
    assert (total, scored, failed) == (count, count, 0)
    with session_scope(settings.db_url) as session:
        per_image = session.execute(
            select(Prediction.image_id, func.count()).group_by(Prediction.image_id)
        ).all()
    assert len(per_image) == count
    assert all(n == 1 for _, n in per_image)


def test_scheduler_resends_a_chunk_whose_message_was_lost(stack, photos_root, tmp_path):
    settings = stack(chunk_size=4, chunk_lease_seconds=5, stalled_check_seconds=1)
    make_photo_folder(photos_root / "lost", count=24, size=(160, 120))
    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, "lost").id
    sent: list[int] = []

    def send_all_but_the_first(chunk_ids: list[int]) -> None:
        keep = [i for i in chunk_ids if sent or i != chunk_ids[0]]
        sent.extend(chunk_ids)
        enqueue(settings, SCORE_TASK, keep)

    run_scan(settings, job_id, send_all_but_the_first)  # the scan, in this process
    assert len(sent) >= 2, "the folder must give more than one chunk"
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log, beat=tmp_path / "celerybeat-schedule")
    try:
        wait_until_done(settings, job_id, log, 120)
    finally:
        stop(worker)
    assert job_state(settings, job_id)[1:] == (24, 24, 0)
    # At least the lost one; on a slow machine others may still wait in the queue past the
    # lease and go twice, which must change nothing (the counts above).
    assert re.search(r"re-sent [1-9]\d* stalled chunks", log.read_text(errors="replace"))
