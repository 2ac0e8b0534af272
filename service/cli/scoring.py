"""`herpscore score`: queue a folder, optionally wait (or run workers) until the job ends."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from service.cli.common import _enqueue, _settings
from service.db import read_scope, session_scope
from service.embedded import embedded_worker
from service.errors import HerpscoreError
from service.models import JobStatus
from service.settings import Settings


@click.command("score")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@click.option("--model", "model_id", type=int, help="Model version id (default: the active one).")
@click.option("--threshold", type=click.FloatRange(0, 1), help="Review threshold for this job.")
@click.option("--no-recursive", is_flag=True, help="Only the folder itself, not subfolders.")
@click.option("--wait", is_flag=True, help="Show progress until the job ends, then a summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option(
    "--with-worker",
    is_flag=True,
    help="Embedded mode: run a worker for the duration of this job (implies --wait).",
)
@click.pass_context
def score_cmd(
    ctx: click.Context,
    folder: Path,
    model_id: int | None,
    threshold: float | None,
    no_recursive: bool,
    wait: bool,
    as_json: bool,
    with_worker: bool,
) -> None:
    """Score every image under FOLDER (which must lie under HERPSCORE_ALLOWED_ROOTS)."""
    from service.jobs import create_job
    from service.tasks_client import SCAN_TASK

    settings = _settings(ctx)
    with session_scope(settings.db_url) as session:
        job = create_job(
            session,
            settings,
            str(folder.expanduser().absolute()),
            model_id=model_id,
            threshold=threshold,
            recursive=not no_recursive,
            created_by="cli",
        )
        job_id = job.id
    _enqueue(settings, SCAN_TASK, job_id)
    if not (wait or with_worker):
        click.echo(
            json.dumps({"job_id": job_id, "status": "queued"})
            if as_json
            else f"job {job_id} queued; follow it with `herpscore jobs show {job_id}`"
        )
        return
    with embedded_worker(settings) if with_worker else _nothing():
        summary = wait_for_job(
            settings, job_id, progress=not as_json, check_workers=not with_worker
        )
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(
            f"job {summary['job_id']} {summary['status']}: {summary['scored']} scored, "
            f"{summary['failed']} failed, {summary['routed_to_review']} routed to review "
            f"({summary['images_per_second']} img/s)"
        )
        click.echo(f"results: herpscore results {job_id} --format csv")
    if summary["status"] != JobStatus.DONE.value:
        ctx.exit(1)


# A job that stands still this long under `score --wait` makes the CLI ask whether any
# worker consumes its queues (a worker takes a new message within a second), and again
# every WORKER_RECHECK_SECONDS while it stays still.
WORKER_CHECK_SECONDS = 5.0
WORKER_RECHECK_SECONDS = 30.0


class NoWorker(HerpscoreError):
    """Nothing would ever run the job being waited for."""

    code = "no_worker"


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def wait_for_job(
    settings: Settings,
    job_id: int,
    progress: bool = True,
    poll: float = 0.5,
    timeout: float | None = None,
    check_workers: bool = False,
) -> dict[str, Any]:
    """Poll a job until it ends, with a progress bar; returns the summary.

    With `check_workers`, a job that stands still for WORKER_CHECK_SECONDS makes it ask
    whether any worker consumes the job's queues (NoWorker if none does).
    """
    from service.jobs import FINISHED, get_job, job_progress

    started = time.monotonic()
    moved_at, last_seen, checked_at = started, None, None
    bar = tqdm(total=0, unit="img", disable=not progress, desc=f"job {job_id}", file=sys.stderr)
    try:
        while True:
            with read_scope(settings.db_url) as session:
                job = get_job(session, job_id)
                status, prog = job.status, job_progress(job)
            bar.total = prog["total"]
            bar.n = prog["scored"] + prog["failed"]
            bar.set_postfix(status=status.value, failed=prog["failed"], refresh=False)
            bar.refresh()
            if status in FINISHED:
                break
            now = time.monotonic()
            if (status, bar.n) != last_seen:  # bar.n: images scored or failed
                moved_at, last_seen = now, (status, bar.n)
            if (
                check_workers
                and now - moved_at >= WORKER_CHECK_SECONDS
                and (checked_at is None or now - checked_at >= WORKER_RECHECK_SECONDS)
            ):
                checked_at = now
                _require_workers(settings, job_id)
            if timeout is not None and time.monotonic() - started > timeout:
                raise HerpscoreError(f"job {job_id} did not finish within {timeout:.0f} s")
            time.sleep(poll)
    finally:
        bar.close()
    return {
        "job_id": job_id,
        "status": status.value,
        "total": prog["total"],
        "scored": prog["scored"],
        "failed": prog["failed"],
        "routed_to_review": prog["routed_to_review"],
        "images_per_second": prog["images_per_second"],
    }


def _require_workers(settings: Settings, job_id: int) -> None:
    """Raise NoWorker when no live worker consumes a queue the job needs.

    A job that never started is cancelled: otherwise a stack started later, perhaps for
    something else, would run it unasked.
    """
    from service.consumers import idle_queues
    from service.jobs import cancel_job, get_job
    from service.tasks_client import SCAN_TASK, SCORE_TASK, TASK_ROUTES

    idle = idle_queues(settings, [TASK_ROUTES[task]["queue"] for task in (SCAN_TASK, SCORE_TASK)])
    if not idle:  # None: the broker is down, and the job waits for it like any message
        return
    with session_scope(settings.db_url) as session:
        never_started = get_job(session, job_id).status == JobStatus.QUEUED
        if never_started:
            cancel_job(session, job_id)
    queues = f"{', '.join(idle)} queue{'s' if len(idle) > 1 else ''}"
    if never_started:
        raise NoWorker(
            f"no worker consumes the {queues}, so job {job_id} was cancelled. Start the "
            "stack with `herpscore up` (in another terminal) and score again, or let this "
            "command run its own workers: `herpscore score FOLDER --with-worker`",
            {"job_id": job_id, "idle_queues": idle},
        )
    raise NoWorker(
        f"no worker consumes the {queues}; job {job_id} goes on when one does: "
        f"start the stack with `herpscore up`, and follow it with `herpscore jobs show {job_id}`",
        {"job_id": job_id, "idle_queues": idle},
    )
