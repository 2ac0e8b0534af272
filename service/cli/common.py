"""What every command shares: domain errors as one line on stderr, the settings in the context."""

from __future__ import annotations

import json
from typing import Any

import click
from sqlalchemy.exc import OperationalError

from service.errors import HerpscoreError
from service.settings import Settings


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


def _hint_if_no_model(settings: Settings) -> None:
    """A fresh install has nothing to score with: say how to have a model on day one."""
    from service.db import read_scope
    from service.registry import active_model

    with read_scope(settings.db_url) as session:
        if active_model(session) is not None:
            return
    click.echo(
        "no active model yet: `herpscore models starter --activate` builds a day-one model "
        "offline (ImageNet's reptiles and amphibians; needs the [train] extra), or "
        "`herpscore models add DIR --activate` adds one you have",
        err=True,
    )


def _enqueue(settings: Settings, task: str, task_id: int) -> bool:
    """Send one task; with the broker down, say on stderr that the work waits for it."""
    from service.tasks_client import enqueue

    sent = enqueue(settings, task, [task_id])
    if not sent.queued:
        click.echo(f"warning: {sent.message}", err=True)
    return sent.queued
