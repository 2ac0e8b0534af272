"""A file that kills its worker fails alone: interrupted chunks split down to that file."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from service.db import session_scope
from service.jobs import create_job, get_job
from service.models import JobStatus, ModelVersion, Prediction
from service.registry import add_model
from service.results import iter_results
from service.scanning import run_scan
from service.scoring import FileOutcome, score_chunk
from service.tasks_client import SCAN_TASK, enqueue
from tests.support.brokers import PrivateRedis
from tests.support.hostile import write_big_png
from tests.support.models import make_model_folder
from tests.support.photos import make_photo_folder, write_photo
from tests.support.workers import start_worker, stop
from workers.tasks import run_model


class WorkerKilled(BaseException):
    """Stands for the pool process dying mid-chunk (a decoder segfault, the OOM killer):
    the chunk's claim committed, nothing after it did, and the broker redelivers it."""


def killed_by_poison(model: ModelVersion, paths: Sequence[str]) -> Sequence[FileOutcome]:
    if any("poison" in path for path in paths):
        raise WorkerKilled
    return run_model(model, paths)


def test_only_the_file_that_kills_workers_fails(db_url, make_settings, photos_root, tmp_path):
    settings = make_settings(db_url, chunk_size=64)
    with session_scope(settings.db_url) as session:
        add_model(session, settings, make_model_folder(tmp_path / "m", ["red"]), activate=True)
    count = 40
    make_photo_folder(photos_root / "site", count=count)
    # Its own bytes: a byte-identical copy of another photo would reuse that one's prediction.
    write_photo(photos_root / "site" / "poison.jpg", "red", seed=4242)
    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, "site").id
    queue: deque[int] = deque()
    run_scan(settings, job_id, queue.extend)
    kills = 0
    while queue:  # the broker: a message whose worker died comes back
        chunk_id = queue.popleft()
        try:
            result = score_chunk(settings, chunk_id, killed_by_poison)
        except WorkerKilled:
            kills += 1
            queue.append(chunk_id)
            continue
        queue.extend(result.split)
        assert kills < 20, "the poison file is never isolated"
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id)
        assert (job.status, job.total, job.scored, job.failed) == (
            JobStatus.DONE, count + 1, count, 1,
        )  # fmt: skip
        failed = [r for r in iter_results(session, job_id) if r["status"] == "failed"]
        assert [(r["rel_path"], r["failure_reason"]) for r in failed] == [
            ("poison.jpg", "killed_worker")
        ]
        per_image = session.execute(
            select(func.count()).select_from(Prediction).group_by(Prediction.image_id)
        ).all()
    assert len(per_image) == count and {n for (n,) in per_image} == {1}


@pytest.mark.parametrize("files", [1, 5])
def test_a_chunk_interrupted_once_still_scores_everything(
    sqlite_url, make_settings, photos_root, tmp_path, files
):
    settings = make_settings(sqlite_url, chunk_size=64)
    with session_scope(settings.db_url) as session:
        add_model(session, settings, make_model_folder(tmp_path / "m", ["red"]), activate=True)
    make_photo_folder(photos_root / "site", count=files)
    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, "site").id
    queue: deque[int] = deque()
    run_scan(settings, job_id, queue.extend)
    first = True
    scored_before = REGISTRY.get_sample_value("herpscore_images_scored_total") or 0.0

    def dies_once(model: ModelVersion, paths: Sequence[str]) -> Sequence[FileOutcome]:
        nonlocal first
        if first:
            first = False
            raise WorkerKilled
        return run_model(model, paths)

    while queue:
        chunk_id = queue.popleft()
        try:
            queue.extend(score_chunk(settings, chunk_id, dies_once).split)
        except WorkerKilled:
            queue.append(chunk_id)
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id)
        assert (job.status, job.scored, job.failed) == (JobStatus.DONE, files, 0)
    scored = REGISTRY.get_sample_value("herpscore_images_scored_total") or 0.0
    assert scored - scored_before == files  # /metrics counts what the workers scored


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_a_real_file_that_kills_real_workers_fails_alone(
    pg_url, make_settings, photos_root, tmp_path
):
    # A real poison file and a real kill: a 64 MP RGBA PNG (300 KB, 256 MB decoded, inside
    # every decode limit) takes its decoding pool process past a 400 MB hard ceiling, and
    # the memory guard kills that process (SIGKILL) mid-chunk, every time. The broker
    # redelivers the chunk, it is split on each claim, and only the PNG fails.
    broker = PrivateRedis(tmp_path / "redis")
    try:
        broker.start()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    settings = make_settings(
        pg_url, broker_url=broker.url, chunk_size=8, worker_kill_memory_megabytes=400
    )
    with session_scope(settings.db_url) as session:
        add_model(session, settings, make_model_folder(tmp_path / "m", ["red"]), activate=True)
    count = 14
    make_photo_folder(photos_root / "site", count=count, size=(96, 72))
    write_big_png(photos_root / "site" / "site0" / "poison.png", 8000, 8000)
    log = tmp_path / "worker.log"
    scan = start_worker(settings, log, "scan,maintenance")
    scorer = start_worker(settings, log, "inference")
    try:
        with session_scope(settings.db_url) as session:
            job_id = create_job(session, settings, "site").id
        enqueue(settings, SCAN_TASK, [job_id])
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            with session_scope(settings.db_url) as session:
                if get_job(session, job_id).status == JobStatus.DONE:
                    break
            time.sleep(0.5)
        else:
            pytest.fail("the job never finished\n" + log.read_text(errors="replace")[-5000:])
        assert scorer.poll() is None and scan.poll() is None, "a worker exited"
    finally:
        stop(scan)
        stop(scorer)
        broker.kill()
    text = log.read_text(errors="replace")
    assert "over the hard ceiling of 400 MB" in text  # a real kill, not a decode failure
    assert "exited with 'signal 9 (SIGKILL)'" in text
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id)
        assert (job.total, job.scored, job.failed) == (count + 1, count, 1)
        failed = [r for r in iter_results(session, job_id) if r["status"] == "failed"]
        assert [(r["rel_path"], r["failure_reason"]) for r in failed] == [
            ("site0/poison.png", "killed_worker")
        ]
        per_image = session.execute(
            select(func.count()).select_from(Prediction).group_by(Prediction.image_id)
        ).all()
    assert len(per_image) == count and {n for (n,) in per_image} == {1}
