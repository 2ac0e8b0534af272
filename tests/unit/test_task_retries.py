"""Tasks ride out a database or broker outage of minutes, not seconds."""

from __future__ import annotations

import pytest
from celery.utils.time import get_exponential_backoff_interval

from workers.tasks import scan_job, score_chunk_task
from workers.training_tasks import export_task, retrain_check_task


@pytest.mark.parametrize(
    "task", [scan_job, score_chunk_task, export_task, retrain_check_task], ids=lambda t: t.name
)
def test_transient_errors_are_retried_for_ten_minutes(task) -> None:
    # Five jittered retries (0-1, 0-2, 0-4, ... s) were spent within 7 s of a 10 s
    # PostgreSQL restart: the chunk's task gave up and its chunk waited for the 900 s lease.
    assert task.retry_jitter is False  # full jitter makes the total a matter of luck
    delays = [
        get_exponential_backoff_interval(
            factor=int(task.retry_backoff), retries=n, maximum=task.retry_backoff_max,
            full_jitter=False,
        )
        for n in range(task.max_retries)
    ]  # fmt: skip
    assert 600 <= sum(delays) <= 900
    assert max(delays) <= 30  # back within half a minute of the database's return
