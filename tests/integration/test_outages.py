"""Broker outages with real Celery workers, PostgreSQL and a Redis server of the test's own."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from service.broker_watch import MARK_KEY, broker_was_reset
from service.db import dispose_engines, session_scope
from service.jobs import create_job, get_job
from service.migrate import upgrade
from service.models import Chunk, ChunkStatus, JobStatus, Prediction
from service.registry import add_model
from service.settings import Settings
from service.tasks_client import SCAN_TASK, enqueue
from tests.support.brokers import PrivateRedis
from tests.support.models import make_model_folder
from tests.support.photos import make_photo_folder
from tests.support.postgres import PrivatePostgres
from tests.support.workers import start_worker, stop

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    try:
        server.start()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    yield server
    server.kill()


@pytest.fixture()
def settings(pg_url, broker, make_settings, tmp_path) -> Settings:
    # A lease far longer than any wait below: recovery must not come from the lease.
    built: Settings = make_settings(
        pg_url, broker_url=broker.url, chunk_size=8, chunk_lease_seconds=900,
        stalled_check_seconds=1,
    )  # fmt: skip
    model_dir = make_model_folder(tmp_path / "model", labels=["red", "green", "blue"])
    with session_scope(built.db_url) as session:
        add_model(session, built, model_dir, activate=True)
    return built


def wait_until(check: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-5000:] if log.exists() else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\nworker log:\n{tail}")


def job_counts(settings: Settings, job_id: int) -> tuple[JobStatus, int, int, int]:
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id)
        return job.status, job.total, job.scored, job.failed


def one_prediction_per_image(settings: Settings) -> list[int]:
    with session_scope(settings.db_url) as session:
        rows = session.execute(
            select(func.count()).select_from(Prediction).group_by(Prediction.image_id)
        ).all()
    return sorted({n for (n,) in rows})


def test_a_scan_rides_out_a_broker_outage(settings, broker, photos_root, tmp_path, pg_url):
    count = 60
    make_photo_folder(photos_root / "survey", count=count, size=(96, 72))
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log, "scan,inference,maintenance", beat=tmp_path / "beat")
    try:
        with session_scope(settings.db_url) as session:
            job_id = create_job(session, settings, "survey").id
        # Hold the job's row, so that the scan blocks in its first transaction: the broker
        # goes down while the scan runs, before it has sent a chunk.
        holder_engine = create_engine(pg_url)
        holder = holder_engine.connect()
        try:
            lock = text("SELECT id FROM scan_jobs WHERE id = :id FOR UPDATE")
            holder.execute(lock, {"id": job_id})
            enqueue(settings, SCAN_TASK, [job_id])

            def scan_waits() -> bool:
                with session_scope(settings.db_url) as session:
                    return bool(
                        session.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted"))
                    )

            wait_until(scan_waits, 60, "the scan to wait on the job's row", log)
            broker.kill()
        finally:
            holder.rollback()
            holder.close()
            holder_engine.dispose()
        wait_until(
            lambda: (
                "waiting for the broker" in log.read_text(errors="replace")
                or job_counts(settings, job_id)[0] in (JobStatus.FAILED, JobStatus.DONE)
            ),
            60,
            "the scan to meet the outage",
            log,
        )
        time.sleep(3)  # an outage of some seconds, as a Redis restart takes
        broker.start()  # empty: whatever was queued is gone
        wait_until(
            lambda: job_counts(settings, job_id)[0] == JobStatus.DONE, 120, "the job done", log
        )
        assert worker.poll() is None, "the worker exited"
    finally:
        stop(worker)
    assert "Unrecoverable error" not in log.read_text(errors="replace")
    assert job_counts(settings, job_id)[1:] == (count, count, 0)
    assert one_prediction_per_image(settings) == [1]


def test_scoring_recovers_from_a_broker_restart_without_a_lease(
    settings, broker, photos_root, tmp_path
):
    count = 48
    make_photo_folder(photos_root / "survey", count=count, size=(96, 72))
    log = tmp_path / "worker.log"
    # The scan/maintenance worker runs the scheduler, as in docker compose; no worker
    # scores yet, so every chunk waits in the broker when it goes down.
    light = start_worker(settings, log, "scan,maintenance", beat=tmp_path / "beat")
    scorer = None
    try:
        with session_scope(settings.db_url) as session:
            job_id = create_job(session, settings, "survey").id
        enqueue(settings, SCAN_TASK, [job_id])
        wait_until(
            lambda: job_counts(settings, job_id)[0] == JobStatus.SCORING, 60, "the scan", log
        )

        def checked() -> bool:
            with broker.client() as client:
                return bool(client.exists(MARK_KEY))

        wait_until(checked, 30, "a scheduler check", log)
        broker.kill()
        time.sleep(3)
        broker.start()  # every queued chunk's message is gone
        scorer = start_worker(settings, log, "inference")
        wait_until(
            lambda: job_counts(settings, job_id)[0] == JobStatus.DONE, 120, "the job done", log
        )
        assert light.poll() is None, "the scan/maintenance worker exited on broker loss"
    finally:
        stop(light)
        if scorer is not None:
            stop(scorer)
    assert "Unrecoverable error" not in log.read_text(errors="replace")
    assert job_counts(settings, job_id)[1:] == (count, count, 0)
    assert one_prediction_per_image(settings) == [1]
    with session_scope(settings.db_url) as session:
        assert not session.scalar(
            select(func.count()).select_from(Chunk).where(Chunk.status == ChunkStatus.QUEUED)
        )


def test_the_scheduler_sees_a_broker_reset_and_a_gap_between_checks(broker, make_settings):
    settings = make_settings("sqlite://", broker_url=broker.url, stalled_check_seconds=10)
    start = time.time()
    assert broker_was_reset(settings, now=start)  # no mark yet: the first check
    assert not broker_was_reset(settings, now=start + 10)  # one interval later
    assert broker_was_reset(settings, now=start + 10 + 25)  # more than two intervals
    broker.kill()
    broker.start()  # empty, as a Redis restarted without its data
    assert broker_was_reset(settings, now=start + 40)


def test_scoring_rides_out_a_postgresql_restart(broker, make_settings, photos_root, tmp_path):
    # A cluster of the test's own, so that restarting it touches no other test's database.
    try:
        cluster = PrivatePostgres()
        cluster.start()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot run a PostgreSQL cluster of our own: {exc}")
    try:
        db_url = cluster.create_database("outage")
        upgrade(db_url)
        settings = make_settings(
            db_url, broker_url=broker.url, chunk_size=4, chunk_lease_seconds=900,
            stalled_check_seconds=2,
        )  # fmt: skip
        with session_scope(settings.db_url) as session:
            model = make_model_folder(tmp_path / "model", labels=["red", "green", "blue"])
            add_model(session, settings, model, activate=True)
        count = 120  # 30 chunks: most are still to score when the database goes
        make_photo_folder(photos_root / "survey", count=count, size=(320, 240))
        log = tmp_path / "worker.log"
        worker = start_worker(settings, log, "scan,inference,maintenance", beat=tmp_path / "b")
        try:
            with session_scope(settings.db_url) as session:
                job_id = create_job(session, settings, "survey").id
            enqueue(settings, SCAN_TASK, [job_id])
            wait_until(lambda: job_counts(settings, job_id)[2] > 0, 90, "scoring", log)
            cluster.stop("immediate")  # a crash: connections cut, no shutdown checkpoint
            time.sleep(15)  # five jittered retries (the old policy) often ended sooner
            cluster.start()
            # Far less than the 900 s lease: the tasks' own retries must carry the job.
            wait_until(
                lambda: job_counts(settings, job_id)[0] == JobStatus.DONE, 120, "the job", log
            )
            assert worker.poll() is None, "the worker exited"
        finally:
            stop(worker)
        assert job_counts(settings, job_id)[1:] == (count, count, 0)
        assert one_prediction_per_image(settings) == [1]
    finally:
        dispose_engines()
        cluster.destroy()
