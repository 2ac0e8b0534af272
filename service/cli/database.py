"""`herpscore init` and `herpscore db`: data folders and the database schema."""

from __future__ import annotations

import click

from service.cli.common import _hint_if_no_model, _settings


@click.command("init")
@click.pass_context
def init_cmd(ctx: click.Context) -> None:
    """Create the data folders and migrate the database to the newest schema."""
    from service.migrate import upgrade

    settings = _settings(ctx)
    settings.ensure_dirs()
    upgrade(settings.db_url)
    click.echo(f"database ready: {settings.db_url}")
    _hint_if_no_model(settings)


@click.group("db")
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
