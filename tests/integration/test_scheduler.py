"""The scheduler's re-sends: every kind of queued or stalled work, once per lease."""

from __future__ import annotations

import os
import time
from datetime import timedelta

from service import copies
from service.db import session_scope
from service.exports import ExportOptions, create_export
from service.jobs import create_job
from service.models import JobStatus, RunStatus, ScanJob, TrainingRun, utcnow
from service.scheduler import requeue_stalled
from service.settings import Settings
from service.thumbnails import THUMBNAIL_SIDE

LONG_AGO = timedelta(hours=1)


def make_work(settings: Settings) -> dict[str, int]:
    """One of each kind of work, all last sent an hour ago, none claimed."""
    then = utcnow() - LONG_AGO
    with session_scope(settings.db_url) as session:
        queued = create_job(session, settings, "site-1")
        scanning = create_job(session, settings, "site-1")
        scanning.status, scanning.started_at, scanning.heartbeat_at = (
            JobStatus.SCANNING, then, then,
        )  # fmt: skip
        alive = create_job(session, settings, "site-1")
        alive.status, alive.started_at, alive.heartbeat_at = JobStatus.SCANNING, then, utcnow()
        for job in (queued, scanning, alive):
            job.created_at = then
        export = create_export(session, ExportOptions.from_settings(settings))
        export.created_at = then
        run_export = create_export(session, ExportOptions.from_settings(settings))
        run = TrainingRun(
            export_id=run_export.id, status=RunStatus.QUEUED, params={}, created_at=then
        )
        session.add(run)
        session.flush()
        return {
            "queued": queued.id, "scanning": scanning.id, "alive": alive.id,
            "export": export.id, "run": run.id,
        }  # fmt: skip


def test_every_kind_of_stalled_work_is_sent_again_once_per_lease(
    api_settings, active_model, photos_root
):
    (photos_root / "site-1").mkdir()
    ids = make_work(api_settings)
    with session_scope(api_settings.db_url) as session:
        first = requeue_stalled(session, api_settings)
    # A scan silent past the lease (its task died on a broker error) is sent again; a
    # scan that recorded a batch just now is not; a training run's export goes with the run.
    assert first.scans == [ids["queued"], ids["scanning"]]
    assert first.exports == [ids["export"]]
    assert first.runs == [ids["run"]]
    with session_scope(api_settings.db_url) as session:
        again = requeue_stalled(session, api_settings)
    assert again.counts() == {"chunks": 0, "scans": 0, "exports": 0, "runs": 0}


def test_after_a_broker_reset_everything_queued_goes_at_once(
    api_settings, active_model, photos_root
):
    (photos_root / "site-1").mkdir()
    ids = make_work(api_settings)
    with session_scope(api_settings.db_url) as session:
        session.get(ScanJob, ids["queued"]).created_at = utcnow()  # type: ignore[union-attr]
        resend = requeue_stalled(session, api_settings, broker_reset=True)
    # A live scan rides out the outage itself: superseding it would hash every file again.
    assert resend.scans == [ids["queued"], ids["scanning"]]
    assert resend.exports == [ids["export"]]
    assert resend.runs == [ids["run"]]


def test_the_scheduler_check_sweeps_stale_render_markers(api_settings, monkeypatch):
    from workers import tasks

    monkeypatch.setattr(tasks, "worker_settings", lambda: api_settings)
    stale = copies.copy_file(api_settings, "0" * 64, THUMBNAIL_SIDE).with_suffix(".pending")
    fresh = stale.with_suffix(".failed")
    stale.parent.mkdir(parents=True)
    stale.touch()
    fresh.touch()
    then = time.time() - copies.PENDING_SECONDS - 5
    os.utime(stale, (then, then))
    counts = tasks.requeue_stalled_task()
    assert counts["markers_swept"] == 1
    assert not stale.exists() and fresh.exists()
