"""`herpscore jobs` and `herpscore results`: follow, cancel and read scoring jobs."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from service.cli.common import _settings
from service.db import session_scope


@click.group("jobs")
def jobs_group() -> None:
    """Scoring jobs."""


@jobs_group.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.pass_context
def jobs_list(ctx: click.Context, limit: int) -> None:
    """The newest jobs."""
    from service.jobs import job_progress, list_jobs

    with session_scope(_settings(ctx).db_url) as session:
        jobs, total = list_jobs(session, limit=limit)
        for job in jobs:
            p = job_progress(job)
            click.echo(
                f"{job.id:>5}  {job.status.value:<9} {p['scored']:>6}/{p['total']:<6} "
                f"failed {p['failed']:<5} review {p['routed_to_review']:<5} {job.folder}"
            )
        click.echo(f"({len(jobs)} of {total})", err=True)


@jobs_group.command("show")
@click.argument("job_id", type=int)
@click.pass_context
def jobs_show(ctx: click.Context, job_id: int) -> None:
    """One job with its progress, as JSON."""
    from service.jobs import get_job, job_to_dict

    with session_scope(_settings(ctx).db_url) as session:
        click.echo(json.dumps(job_to_dict(get_job(session, job_id)), indent=2))


@jobs_group.command("cancel")
@click.argument("job_id", type=int)
@click.pass_context
def jobs_cancel(ctx: click.Context, job_id: int) -> None:
    """Stop a job; chunks not yet scored are skipped."""
    from service.jobs import cancel_job

    with session_scope(_settings(ctx).db_url) as session:
        cancel_job(session, job_id)
    click.echo(f"job {job_id} cancelled")


@click.command("results")
@click.argument("job_id", type=int)
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json", "megadetector", "camtrap-dp"]),
    default="csv", help="camtrap-dp is a zip package.",
)  # fmt: skip
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to a file instead of standard output.",
)
@click.pass_context
def results_cmd(ctx: click.Context, job_id: int, fmt: str, output: Path | None) -> None:
    """Every image of a job with its final label, prediction or failure reason."""
    from service.formats import write_format
    from service.jobs import FINISHED, get_job

    with (
        session_scope(_settings(ctx).db_url) as session,
        output.open("wb") if output else _stdout() as fh,
    ):
        status = get_job(session, job_id).status
        if status not in FINISHED:
            click.echo(
                f"warning: job {job_id} is {status.value}, not finished: these are its results "
                f"so far (follow it with `herpscore jobs show {job_id}`)",
                err=True,
            )
        write_format(session, job_id, fmt, fh)


@contextmanager
def _stdout() -> Iterator[Any]:
    sys.stdout.flush()
    yield sys.stdout.buffer
