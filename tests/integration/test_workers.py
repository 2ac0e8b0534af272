"""Real Celery worker processes on real PostgreSQL and Redis: a job end to end, and a crash."""

from __future__ import annotations

import os
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
from service.models import JobStatus, Prediction
from service.registry import add_model
from service.settings import Settings
from service.tasks_client import enqueue_scan
from tests.conftest import REDIS_URL, skip_or_fail
from tests.support.models import make_model_folder
from tests.support.photos import make_photo_folder

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
REDIS_TEST_DB = 15


@pytest.fixture()
def redis_broker() -> str:
    import redis

    url = REDIS_URL.rsplit("/", 1)[0] + f"/{REDIS_TEST_DB}"
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.flushdb()
    except redis.exceptions.ConnectionError:
        skip_or_fail(f"Redis is not reachable at {url}")
    return url


def start_worker(settings: Settings, log: Path, concurrency: int = 2) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(settings_env(settings))
    cmd = [
        sys.executable, "-m", "celery", "--quiet", "-A", "workers", "worker",
        "-Q", "scan,inference,maintenance", "--concurrency", str(concurrency),
        "--loglevel", "INFO", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=60)


def wait_until(check: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; worker log:\n{tail}")


@pytest.fixture()
def stack(pg_url, redis_broker, make_settings, tmp_path) -> Iterator[Callable[..., Settings]]:
    """Settings on PostgreSQL + Redis with an active tiny model."""

    def build(**overrides: object) -> Settings:
        settings = make_settings(pg_url, broker_url=redis_broker, **overrides)
        model_dir = make_model_folder(tmp_path / "model", labels=["red", "green", "blue"])
        with session_scope(settings.db_url) as session:
            add_model(session, settings, model_dir, activate=True)
        return settings

    yield build


def submit(settings: Settings, folder: str) -> int:
    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, folder).id
    enqueue_scan(settings, job_id)
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


def test_worker_killed_mid_job_loses_nothing(stack, photos_root, tmp_path):
    settings = stack(chunk_size=2, broker_visibility_timeout=3)
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

    second = start_worker(settings, log)
    try:
        wait_until(lambda: job_state(settings, job_id)[0] == JobStatus.DONE, 180, "done", log)
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
