"""`herpscore demo`: the whole loop on synthetic images (draw, fine-tune, register, score)."""

from __future__ import annotations

from pathlib import Path

import click

from service.cli.common import _settings
from service.cli.scoring import wait_for_job
from service.db import session_scope
from service.embedded import embedded_worker
from service.errors import HerpscoreError
from service.models import JobStatus
from service.settings import Settings


@click.command("demo")
@click.option("--classes", type=click.IntRange(2, 12), default=4, show_default=True)
@click.option("--per-class", type=click.IntRange(10, 1000), default=60, show_default=True)
@click.option(
    "--size",
    type=click.IntRange(32, 384),
    default=96,
    show_default=True,
    help="Model input size in pixels.",
)
@click.option(
    "--epochs",
    type=click.IntRange(1, 50),
    default=3,
    show_default=True,
    help="Epochs of the fine-tuning stage (the head is first fitted as a linear probe).",
)
@click.pass_context
def demo_cmd(ctx: click.Context, classes: int, per_class: int, size: int, epochs: int) -> None:
    """The whole loop on a fresh machine: draw a labelled set, fine-tune, register, score.

    The images are procedurally drawn patterns (clearly synthetic), so it needs no data and
    no internet. It takes a few minutes on two CPU cores.
    """
    from service.migrate import upgrade

    base = _settings(ctx)
    demo_dir = base.data_path / "demo"
    settings = base.model_copy(update={"allowed_roots": [*base.allowed_roots, demo_dir]})
    settings.ensure_dirs()
    upgrade(settings.db_url)
    try:
        from training.fit import get_args_parser
        from training.fit import main as fit
        from training.synthetic import make_synthetic_dataset
    except ImportError as exc:
        raise HerpscoreError(
            f"the demo trains a model and needs the [train] extra ({exc.name} is missing): "
            "pip install -e '.[train]'"
        ) from None

    click.echo(f"1/4 drawing {classes} classes x {per_class} synthetic images in {demo_dir}")
    dataset = make_synthetic_dataset(
        demo_dir / "dataset", classes=classes, per_class=per_class, size=max(size, 96), seed=0
    )
    click.echo(f"2/4 fine-tuning efficientnet_lite0 at {size} px (linear probe + {epochs} epochs)")
    run_dir = demo_dir / "run"
    args = get_args_parser().parse_args(
        ["--data", str(dataset), "--out", str(run_dir), "--size", str(size),
         "--epochs-stage2", str(epochs), "--no-int8",
         "--name", "demo-synthetic", "--batch-size", "32"]
    )  # fmt: skip
    model_dir = fit(args)
    click.echo("3/4 registering and activating the model")
    model_id = _register_demo_model(settings, model_dir)
    click.echo(f"4/4 scoring {dataset / 'test'} with model version {model_id}")
    with session_scope(settings.db_url) as session:
        from service.jobs import create_job

        job_id = create_job(session, settings, str(dataset / "test"), created_by="demo").id
    from service.cli.common import _enqueue
    from service.tasks_client import SCAN_TASK

    _enqueue(settings, SCAN_TASK, job_id)
    with embedded_worker(settings):
        summary = wait_for_job(settings, job_id)
    accuracy = _demo_accuracy(settings, job_id)
    click.echo(
        f"job {job_id} {summary['status']}: {summary['scored']} scored, {summary['failed']} "
        f"failed, {summary['routed_to_review']} routed to review; top-1 accuracy against the "
        f"drawn labels {accuracy:.1%}"
    )
    click.echo(f"results:  herpscore results {job_id} --format csv")
    click.echo(f"training: {run_dir} (metrics.json, confusion matrix, reliability diagram)")
    click.echo(f"web UI:   HERPSCORE_ALLOWED_ROOTS={demo_dir} herpscore up")
    if summary["status"] != JobStatus.DONE.value:
        ctx.exit(1)


def _register_demo_model(settings: Settings, model_dir: Path) -> int:
    from service.errors import InvalidState
    from service.registry import activate_model, add_model

    with session_scope(settings.db_url) as session:
        try:
            model_id = add_model(session, settings, model_dir, name="demo-synthetic").id
        except InvalidState as exc:  # the same seeded model from an earlier demo run
            model_id = int(exc.details["model_version_id"])
        activate_model(session, model_id, reason="demo", actor="cli")
        return model_id


def _demo_accuracy(settings: Settings, job_id: int) -> float:
    """Share of scored test images whose label matches the folder they were drawn into."""
    from service.results import iter_results

    with session_scope(settings.db_url) as session:
        rows = [r for r in iter_results(session, job_id) if r["status"] == "scored"]
    hits = sum(1 for r in rows if Path(r["rel_path"]).parts[0] == r["label"])
    return hits / len(rows) if rows else 0.0
