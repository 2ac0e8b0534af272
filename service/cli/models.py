"""`herpscore models`: the model registry (add, list, activate, roll back)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from service.cli.common import _settings
from service.db import session_scope
from service.errors import HerpscoreError


@click.group("models")
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
        model = activate_model(session, model_id, reason="manual (cli)", actor="cli")
        click.echo(f"model version {model.id} ({model.name}) is now active")


@models_group.command("starter")
@click.option("--out", type=click.Path(path_type=Path), help="Folder (default DATA_DIR/starter).")
@click.option("--activate", is_flag=True, help="Make it the active model for new jobs.")
@click.option("--flip", is_flag=True, help="Average with the mirrored photo (twice the compute).")
@click.pass_context
def models_starter(ctx: click.Context, out: Path | None, activate: bool, flip: bool) -> None:
    """Build, offline, a day-one model from ImageNet weights (reptiles, amphibians, 'not a
    herp'; see docs/training.md for what it can tell) and register it."""
    try:
        from training.starter import add_starter
    except ImportError as exc:
        raise HerpscoreError(
            f"the starter model needs the [train] extra ({exc.name} is missing): "
            "pip install -e '.[train]'"
        ) from None
    click.echo(add_starter(_settings(ctx), out, activate=activate, flip=flip)[1])


@models_group.command("rollback")
@click.pass_context
def models_rollback(ctx: click.Context) -> None:
    """Re-activate the version that was active before the current one."""
    from service.registry import rollback

    with session_scope(_settings(ctx).db_url) as session:
        model = rollback(session, actor="cli")
        click.echo(f"rolled back: model version {model.id} ({model.name}) is active again")
