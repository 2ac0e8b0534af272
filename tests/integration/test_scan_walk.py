"""The scan's walk: a folder it cannot enter is a failure row with a reason, not silence."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.db import session_scope
from service.jobs import create_job, get_job
from service.models import JobStatus
from service.registry import add_model
from service.results import iter_results
from tests.support.models import make_model_folder
from tests.support.photos import make_photo_folder
from tests.support.scoring import scan_and_score


def test_a_folder_the_scan_cannot_enter_becomes_a_failure_row(
    sqlite_url, make_settings, photos_root, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    settings = make_settings(sqlite_url, chunk_size=4)
    with session_scope(settings.db_url) as session:
        add_model(session, settings, make_model_folder(tmp_path / "m", ["red"]), activate=True)
    make_photo_folder(photos_root / "site" / "open", count=3)
    make_photo_folder(photos_root / "site" / "locked" / "deeper", count=2)
    locked = photos_root / "site" / "locked"
    # Tests run as root, for whom chmod 000 changes nothing: listing the folder fails the
    # way it does for the worker's user on a folder it may not read.
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:
        if Path(os.fsdecode(path)) == locked:  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied", os.fsdecode(path))  # type: ignore[arg-type]
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, "site").id
    scan_and_score(settings, job_id)
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id)
        rows = {r["rel_path"]: r for r in iter_results(session, job_id)}
        assert (job.status, job.total, job.scored, job.failed) == (JobStatus.DONE, 4, 3, 1)
    row = rows["locked/"]
    assert (row["status"], row["failure_reason"]) == ("failed", "unreadable_folder")
    assert "Permission denied" in row["failure_detail"]
