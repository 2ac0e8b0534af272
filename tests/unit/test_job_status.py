"""The job status machine: which moves are allowed, and that a move is conditional."""

from __future__ import annotations

import itertools

import pytest

from service.jobs import FINISHED, TRANSITIONS, can_transition
from service.models import JobStatus

Q, SCAN, SCORE, DONE, FAIL, CANCEL = (
    JobStatus.QUEUED, JobStatus.SCANNING, JobStatus.SCORING,
    JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED,
)  # fmt: skip
ALLOWED = {
    (Q, SCAN), (Q, FAIL), (Q, CANCEL),
    (SCAN, SCAN), (SCAN, SCORE), (SCAN, DONE), (SCAN, FAIL), (SCAN, CANCEL),
    (SCORE, DONE), (SCORE, FAIL), (SCORE, CANCEL),
}  # fmt: skip


@pytest.mark.parametrize(("current", "target"), list(itertools.product(JobStatus, JobStatus)))
def test_exactly_the_designed_moves_are_allowed(current: JobStatus, target: JobStatus) -> None:
    assert can_transition(current, target) == ((current, target) in ALLOWED)


def test_finished_jobs_never_move_and_every_status_is_known() -> None:
    assert set(TRANSITIONS) == set(JobStatus)
    assert all(not TRANSITIONS[s] for s in FINISHED)


def test_transition_is_conditional_on_the_status_read(sqlite_url, make_settings, tmp_path):
    """Two workers that read the same status: only the first move wins."""
    from service.db import session_scope
    from service.jobs import create_job, get_job, transition
    from service.registry import add_model
    from tests.support.models import make_model_folder

    settings = make_settings(sqlite_url)
    (settings.allowed_roots[0] / "s").mkdir()
    with session_scope(settings.db_url) as session:
        add_model(session, settings, make_model_folder(tmp_path / "m"), activate=True)
        job_id = create_job(session, settings, "s").id
    with session_scope(settings.db_url) as one:
        stale = get_job(one, job_id)  # a worker reads "queued" ...
    with session_scope(settings.db_url) as two:
        assert transition(two, get_job(two, job_id), CANCEL)  # ... another cancels first
    with session_scope(settings.db_url) as three:
        assert stale.status == Q
        assert not transition(three, three.merge(stale, load=False), SCAN)
        job = get_job(three, job_id)
        assert job.status == CANCEL and job.finished_at is not None


def test_rate_counts_from_the_start_of_the_job_not_the_end_of_the_scan() -> None:
    """Chunks are scored while the scan runs, so the status flips to scoring late: a job
    that scored 200 photos in 100 s runs at 2 img/s even if its scan ended 1 s ago."""
    from datetime import timedelta

    from service.jobs import job_progress
    from service.models import ScanJob, utcnow

    now = utcnow()
    job = ScanJob(
        folder="/x", status=JobStatus.SCORING, total=400, scored=200, failed=0, routed=0,
        scan_complete=True, started_at=now - timedelta(seconds=100),
        scoring_started_at=now - timedelta(seconds=1),
    )  # fmt: skip
    progress = job_progress(job, now=now)
    assert progress["images_per_second"] == 2.0
    assert progress["elapsed_seconds"] == 100.0
    assert progress["eta_seconds"] == 100.0


def test_a_job_still_scanning_is_never_reported_done() -> None:
    """Every file found so far is scored, but the scan goes on: not 100 % yet."""
    from service.jobs import job_progress
    from service.models import ScanJob, utcnow

    job = ScanJob(
        folder="/x", status=JobStatus.SCANNING, total=877, scored=877, failed=0, routed=0,
        scan_complete=False, started_at=utcnow(),
    )  # fmt: skip
    assert job_progress(job)["fraction_done"] == 0.99
    job.scan_complete = True
    assert job_progress(job)["fraction_done"] == 1.0
