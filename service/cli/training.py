"""`herpscore retrain` and `herpscore training`: training runs and their promotion."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from tqdm import tqdm

from service.cli.common import _enqueue, _settings
from service.db import session_scope
from service.settings import Settings


@click.command("retrain")
@click.option("--force", is_flag=True, help="Train even with fewer new labels than needed.")
@click.option("--wait", is_flag=True, help="Wait until the run ends (a training worker runs it).")
@click.pass_context
def retrain_cmd(ctx: click.Context, force: bool, wait: bool) -> None:
    """Run the retrain check now, ignoring the schedule; queue a run if it is due."""
    from service import retraining, training_stack
    from service.tasks_client import TRAIN_TASK

    settings = _settings(ctx)
    training_stack.require_training(settings)  # as the UI and API: no run queued to fail
    with session_scope(settings.db_url) as session:
        result = retraining.retrain_check(session, settings, force=force, trigger="manual")
    if result.run_id is None:
        click.echo(f"no training run: {result.reason}")
        return
    if _enqueue(settings, TRAIN_TASK, result.run_id):
        click.echo(f"training run {result.run_id} queued ({result.reason})")
    if not wait:
        click.echo(f"follow it with `herpscore training show {result.run_id}`")
        return
    run = _wait_for_run(settings, result.run_id)
    click.echo(_run_line(run))
    if run["promotion"]:
        click.echo("gate: " + "; ".join(run["promotion"].get("reasons") or []))
    if run["status"] != "done":
        ctx.exit(1)


def _wait_for_run(settings: Settings, run_id: int, poll: float = 2.0) -> dict[str, Any]:
    from service.retraining import get_run, run_to_dict

    with tqdm(desc=f"training run {run_id}", bar_format="{desc}: {elapsed} {postfix}") as bar:
        while True:
            with session_scope(settings.db_url) as session:
                run = run_to_dict(get_run(session, run_id))
            bar.set_postfix_str(run["status"])
            if run["status"] in ("done", "failed"):
                return run
            time.sleep(poll)


def _run_line(run: dict[str, Any]) -> str:
    promotion = run["promotion"]
    verdict = "-"
    if promotion:
        verdict = "refused"
        verdict = "passed" if promotion["passed"] else verdict
        verdict = "promoted" if promotion["promoted"] else verdict
    return (
        f"{run['id']:>4}  {run['status']:<7} {run['trigger']:<8} export {run['export_id']}  "
        f"model {run['model_version_id'] or '-'}  {verdict}"
        + (f"  error: {run['error']}" if run["error"] else "")
    )


@click.group("training")
def training_group() -> None:
    """Training runs and their promotion decisions."""


@training_group.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.pass_context
def training_list(ctx: click.Context, limit: int) -> None:
    """The newest training runs."""
    from service.retraining import list_runs, run_to_dict

    with session_scope(_settings(ctx).db_url) as session:
        runs, total = list_runs(session, limit=limit)
        rows = [run_to_dict(r) for r in runs]
    if not rows:
        click.echo("no training runs yet: `herpscore retrain --force` starts one")
    for row in rows:
        click.echo(_run_line(row))
    click.echo(f"({len(rows)} of {total})", err=True)


@training_group.command("show")
@click.argument("run_id", type=int)
@click.pass_context
def training_show(ctx: click.Context, run_id: int) -> None:
    """One run with its metrics and promotion decision, as JSON."""
    from service.retraining import get_run, run_to_dict

    with session_scope(_settings(ctx).db_url) as session:
        click.echo(json.dumps(run_to_dict(get_run(session, run_id), full=True), indent=2))


@training_group.command("promote")
@click.argument("run_id", type=int)
@click.option("--force", is_flag=True, help="Promote even though the gate refused it.")
@click.pass_context
def training_promote(ctx: click.Context, run_id: int, force: bool) -> None:
    """Make a run's candidate the active model (if it passed the gate)."""
    from service.promotion import promote_run

    with session_scope(_settings(ctx).db_url) as session:
        model = promote_run(session, run_id, actor="cli", force=force)
        click.echo(f"model version {model.id} ({model.name}) is now active")
