"""The `herpscore` command line: set-up, models, keys, scoring, results, the embedded stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from tqdm import tqdm

from service.db import read_scope, session_scope
from service.errors import HerpscoreError
from service.models import JobStatus, Role
from service.settings import Settings, get_settings


class HerpscoreGroup(click.Group):
    """Turns domain errors into one clear line on stderr and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HerpscoreError as exc:
            click.echo(f"error: {exc.message}", err=True)
            if exc.details:
                click.echo(f"details: {json.dumps(exc.details, default=str)}", err=True)
            ctx.exit(2)
        except OperationalError as exc:
            click.echo(f"error: the database cannot be used: {exc.orig}", err=True)
            click.echo(
                "hint: run `herpscore init` first, or check HERPSCORE_DATABASE_URL", err=True
            )
            ctx.exit(2)


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


@click.group(cls=HerpscoreGroup)
@click.pass_context
def main(ctx: click.Context) -> None:
    """herpscore: identify species on folders of field photos, review, retrain."""
    try:
        ctx.obj = get_settings()
    except ValidationError as exc:
        raise click.UsageError(f"invalid HERPSCORE_* setting:\n{exc}") from None


# ---------------------------------------------------------------- database


@main.command("init")
@click.pass_context
def init_cmd(ctx: click.Context) -> None:
    """Create the data folders and migrate the database to the newest schema."""
    from service.migrate import upgrade

    settings = _settings(ctx)
    settings.ensure_dirs()
    upgrade(settings.db_url)
    click.echo(f"database ready: {settings.db_url}")


@main.group("db")
def db_group() -> None:
    """Database schema commands."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Apply migrations (alembic upgrade)."""
    from service.migrate import upgrade

    settings = _settings(ctx)
    settings.ensure_dirs()
    upgrade(settings.db_url, revision)
    click.echo(f"database at {revision}: {settings.db_url}")


# ---------------------------------------------------------------- models


@main.group("models")
def models_group() -> None:
    """The model registry."""


@models_group.command("add")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--name", help="A name for this version (default: metadata name or folder).")
@click.option("--activate", is_flag=True, help="Make it the active model for new jobs.")
@click.pass_context
def models_add(ctx: click.Context, folder: Path, name: str | None, activate: bool) -> None:
    """Validate a model folder, copy it into the registry and record a version."""
    from service.registry import add_model

    settings = _settings(ctx)
    with session_scope(settings.db_url) as session:
        model = add_model(session, settings, folder, name=name, activate=activate)
        click.echo(
            f"model version {model.id} ({model.name}): {model.num_classes} classes, "
            f"{model.status.value}, stored at {model.path}"
        )


@models_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models_list(ctx: click.Context, as_json: bool) -> None:
    """List model versions, newest first."""
    from service.registry import list_models

    with session_scope(_settings(ctx).db_url) as session:
        rows = [
            {
                "id": m.id,
                "name": m.name,
                "status": m.status.value,
                "classes": m.num_classes,
                "created_at": m.created_at.isoformat(timespec="seconds"),
            }
            for m in list_models(session)
        ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no models yet: add one with `herpscore models add DIR --activate`")
    for r in rows:
        click.echo(f"{r['id']:>4}  {r['status']:<9} {r['classes']:>4} classes  {r['name']}")


@models_group.command("activate")
@click.argument("model_id", type=int)
@click.pass_context
def models_activate(ctx: click.Context, model_id: int) -> None:
    """Make a model version the active one for new jobs."""
    from service.registry import activate_model

    with session_scope(_settings(ctx).db_url) as session:
        model = activate_model(session, model_id)
        click.echo(f"model version {model.id} ({model.name}) is now active")


# ---------------------------------------------------------------- keys


@main.group("keys")
def keys_group() -> None:
    """API keys."""


@keys_group.command("create")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--name", default="cli", show_default=True, help="Who or what uses the key.")
@click.pass_context
def keys_create(ctx: click.Context, role: str, name: str) -> None:
    """Create an API key; it is shown once and stored only as a hash."""
    from service.apikeys import create_key

    with session_scope(_settings(ctx).db_url) as session:
        key, secret = create_key(session, name, Role(role))
        click.echo(f"key {key.id} ({key.role.value}) for {key.name}:", err=True)
    click.echo(secret)


@keys_group.command("list")
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    """List API keys (never their secrets)."""
    from service.apikeys import list_keys

    with session_scope(_settings(ctx).db_url) as session:
        for k in list_keys(session):
            state = "revoked" if k.revoked_at else "active"
            click.echo(f"{k.id:>4}  {k.role.value:<8} {state:<8} {k.prefix}  {k.name}")


@keys_group.command("revoke")
@click.argument("key_id", type=int)
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: int) -> None:
    """Revoke an API key."""
    from service.apikeys import revoke_key

    with session_scope(_settings(ctx).db_url) as session:
        revoke_key(session, key_id)
    click.echo(f"key {key_id} revoked")


# ---------------------------------------------------------------- scoring


@main.command("score")
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
    from service.tasks_client import enqueue_scan

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
    enqueue_scan(settings, job_id)
    if not (wait or with_worker):
        click.echo(
            json.dumps({"job_id": job_id, "status": "queued"})
            if as_json
            else f"job {job_id} queued; follow it with `herpscore jobs show {job_id}`"
        )
        return
    with embedded_worker(settings) if with_worker else _nothing():
        summary = wait_for_job(settings, job_id, progress=not as_json)
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


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# The embedded stack's Celery workers: (name, queues, processes; 0 = one per core).
# Scoring gets every core to itself; scanning (walking, hashing, EXIF), exports, training
# and maintenance run in a second, mostly idle worker, so a scan never holds a slot that
# would be scoring (benchmarks/results/scoring.md, "worker layout").
WorkerPools = tuple[tuple[str, tuple[str, ...], int], ...]
EMBEDDED_WORKERS: WorkerPools = (
    ("inference", ("inference",), 0),
    ("tasks", ("scan", "maintenance", "export", "training"), 2),
)


@contextmanager
def embedded_worker(
    settings: Settings, beat: bool = False, pools: WorkerPools = EMBEDDED_WORKERS
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Run Celery workers (by default EMBEDDED_WORKERS) as child processes for a block."""
    settings.ensure_dirs()
    env = dict(os.environ)
    env.update(settings_env(settings))
    # A personal, single-user stack commonly runs as whoever is logged in, root included.
    env.setdefault("PYTHONWARNINGS", "ignore:You're running the worker with superuser")
    procs: list[subprocess.Popen[bytes]] = []
    # SIGTERM (`kill`, `timeout`, a service manager) must stop the workers too: by default
    # it ends this process without running the `finally` below, orphaning them.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        for name, queues, processes in pools:
            processes = processes or settings.worker_concurrency or os.cpu_count() or 1
            cmd = [
                sys.executable, "-m", "celery", "--quiet", "-A", "workers", "worker",
                "-Q", ",".join(queues), "--hostname", f"{name}@%h",
                "--concurrency", str(processes), "--loglevel", "WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ]  # fmt: skip
            if beat and name == pools[-1][0]:  # the scheduler rides with the light worker
                cmd += ["--beat", "--schedule", str(settings.data_path / "celerybeat-schedule")]
            procs.append(subprocess.Popen(cmd, env=env, start_new_session=True))
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()  # warm shutdown: the worker stops its own pool
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def settings_env(settings: Settings) -> dict[str, str]:
    """The HERPSCORE_* variables that give a child process these same settings."""
    env = {}
    for name, value in settings.model_dump(exclude_defaults=False).items():
        if value is None:
            continue
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        env[f"HERPSCORE_{name.upper()}"] = str(value)
    return env


def wait_for_job(
    settings: Settings,
    job_id: int,
    progress: bool = True,
    poll: float = 0.5,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Poll a job until it ends, with a progress bar; returns the summary."""
    from service.jobs import FINISHED, get_job, job_progress

    started = time.monotonic()
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


# ---------------------------------------------------------------- the demo


@main.command("demo")
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
    help="Epochs per training stage.",
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
    click.echo(f"2/4 fine-tuning efficientnet_lite0 at {size} px ({epochs}+{epochs} epochs)")
    run_dir = demo_dir / "run"
    args = get_args_parser().parse_args(
        ["--data", str(dataset), "--out", str(run_dir), "--size", str(size),
         "--epochs-stage1", str(epochs), "--epochs-stage2", str(epochs), "--no-int8",
         "--name", "demo-synthetic", "--batch-size", "32"]
    )  # fmt: skip
    model_dir = fit(args)
    click.echo("3/4 registering and activating the model")
    model_id = _register_demo_model(settings, model_dir)
    click.echo(f"4/4 scoring {dataset / 'test'} with model version {model_id}")
    with session_scope(settings.db_url) as session:
        from service.jobs import create_job

        job_id = create_job(session, settings, str(dataset / "test"), created_by="demo").id
    from service.tasks_client import enqueue_scan

    enqueue_scan(settings, job_id)
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


# ---------------------------------------------------------------- jobs and results


@main.group("jobs")
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


@main.command("results")
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

    with (
        session_scope(_settings(ctx).db_url) as session,
        output.open("wb") if output else _stdout() as fh,
    ):
        write_format(session, job_id, fmt, fh)


@contextmanager
def _stdout() -> Iterator[Any]:
    sys.stdout.flush()
    yield sys.stdout.buffer


# ---------------------------------------------------------------- users


@main.group("users")
def users_group() -> None:
    """People who log into the web UI."""


def _read_password(from_stdin: bool) -> str:
    """The new password from one line of stdin, or an interactive prompt asked twice."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.UsageError("--password-stdin given but stdin held no password")
        return password
    if not sys.stdin.isatty():
        raise click.UsageError("no terminal to prompt for a password: use --password-stdin")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_group.command("create")
@click.argument("username")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin (one line).")
@click.pass_context
def users_create(ctx: click.Context, username: str, role: str, password_stdin: bool) -> None:
    """Create a UI user; the password is prompted for (twice) or read from stdin."""
    from service.users import create_user

    password = _read_password(password_stdin)
    with session_scope(_settings(ctx).db_url) as session:
        user = create_user(session, username, password, Role(role))
        click.echo(f"user {user.id} {user.username} ({user.role.value}) created")


@users_group.command("list")
@click.pass_context
def users_list(ctx: click.Context) -> None:
    """List UI users (never their password hashes)."""
    from service.users import list_users

    with session_scope(_settings(ctx).db_url) as session:
        for u in list_users(session):
            state = "disabled" if u.disabled else "active"
            last = u.last_login_at.strftime("%Y-%m-%d %H:%M") if u.last_login_at else "never"
            click.echo(
                f"{u.id:>4}  {u.role.value:<8} {state:<8} last login {last:<16}  {u.username}"
            )


@users_group.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin (one line).")
@click.pass_context
def users_set_password(ctx: click.Context, username: str, password_stdin: bool) -> None:
    """Replace a user's password."""
    from service.users import set_password

    password = _read_password(password_stdin)
    with session_scope(_settings(ctx).db_url) as session:
        set_password(session, username, password)
    click.echo(f"password of {username} changed")


# ---------------------------------------------------------------- export, retraining, promotion


@main.command("export")
@click.option(
    "--include-confident",
    type=click.FloatRange(0, 1, min_open=True),
    help="Also export predictions at least this confident (machine labels train only).",
)
@click.option("--min-per-class", type=click.IntRange(1), help="Drop smaller classes.")
@click.option("--val-frac", type=click.FloatRange(0, 0.5), help="Validation fraction.")
@click.option("--test-frac", type=click.FloatRange(0, 0.5), help="Test fraction.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-sites", is_flag=True, help="Split image by image, ignoring sites.")
@click.option("--json", "as_json", is_flag=True, help="Print the export as one JSON object.")
@click.pass_context
def export_cmd(
    ctx: click.Context,
    include_confident: float | None,
    min_per_class: int | None,
    val_frac: float | None,
    test_frac: float | None,
    seed: int,
    no_sites: bool,
    as_json: bool,
) -> None:
    """Write verified labels into a new, immutable training-set folder (runs here, now)."""
    from service.exports import ExportOptions, create_export, export_to_dict, run_export

    settings = _settings(ctx)
    options = ExportOptions.from_settings(
        settings,
        include_confident=include_confident,
        min_per_class=min_per_class,
        val_fraction=val_frac,
        test_fraction=test_frac,
        seed=seed,
        group_by_site=not no_sites,
    )
    with session_scope(settings.db_url) as session:
        export_id = create_export(session, options, created_by="cli").id
    export = run_export(settings, export_id)
    if as_json:
        click.echo(json.dumps(export_to_dict(export)))
        return
    counts = export.counts or {}
    click.echo(
        f"export {export.id}: {counts.get('total', 0)} images ({counts.get('splits')}), "
        f"{counts.get('split_mode')} split -> {export.path}"
    )
    click.echo(f"dataset card: {export.path}/README.md")


@main.command("retrain")
@click.option("--force", is_flag=True, help="Train even with fewer new labels than needed.")
@click.option("--wait", is_flag=True, help="Wait until the run ends (a training worker runs it).")
@click.pass_context
def retrain_cmd(ctx: click.Context, force: bool, wait: bool) -> None:
    """Run the retrain check now, ignoring the schedule; queue a run if it is due."""
    from service import retraining

    settings = _settings(ctx)
    with session_scope(settings.db_url) as session:
        result = retraining.retrain_check(session, settings, force=force, trigger="manual")
    if result.run_id is None:
        click.echo(f"no training run: {result.reason}")
        return
    retraining.enqueue_training(settings, result.run_id)
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


@main.group("training")
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


@models_group.command("rollback")
@click.pass_context
def models_rollback(ctx: click.Context) -> None:
    """Re-activate the version that was active before the current one."""
    from service.registry import rollback

    with session_scope(_settings(ctx).db_url) as session:
        model = rollback(session, actor="cli")
        click.echo(f"rolled back: model version {model.id} ({model.name}) is active again")


# ---------------------------------------------------------------- the embedded stack


@main.command("up")
@click.option("--host", help="Web address (default from settings).")
@click.option("--port", type=int, help="Web port (default from settings).")
@click.pass_context
def up_cmd(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the embedded stack in one command: web UI + API, the workers and the scheduler."""
    from service.migrate import upgrade
    from service.web import create_app

    settings = _settings(ctx)
    settings.ensure_dirs()
    upgrade(settings.db_url)
    app = create_app(settings)
    with embedded_worker(settings, beat=True) as workers:
        pids = ", ".join(str(w.pid) for w in workers)
        click.echo(f"worker pids {pids}; database {settings.db_url}", err=True)
        app.run(
            host=host or settings.web_host,
            port=port or settings.web_port,
            threaded=True,
            use_reloader=False,
        )


# The field commands (species, sites) attach to `main` when imported.
from service import cli_field  # noqa: E402, F401

if __name__ == "__main__":
    main()
