"""The `herpscore` command line: the `main` group; each command group lives in its own module."""

from __future__ import annotations

import importlib

import click
from pydantic import ValidationError

from service.cli import (
    database,
    exports,
    field,
    jobs,
    keys,
    models,
    scoring,
    stack,
    training,
    users,
)
from service.cli.common import HerpscoreGroup
from service.cli.scoring import wait_for_job
from service.embedded import EMBEDDED_WORKERS, embedded_worker, settings_env
from service.settings import get_settings

__all__ = ["EMBEDDED_WORKERS", "embedded_worker", "main", "settings_env", "wait_for_job"]

# Commands that live outside `service`, named rather than imported (as `celery -A workers`
# names the workers): the demo trains a model, and only `training` may import torch.
LAZY_COMMANDS = {"demo": "training.demo:demo_cmd"}


class MainGroup(HerpscoreGroup):
    """The top-level group: its own commands plus LAZY_COMMANDS, imported when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in LAZY_COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, name = LAZY_COMMANDS[cmd_name].split(":")
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=MainGroup)
@click.pass_context
def main(ctx: click.Context) -> None:
    """herpscore: identify species on folders of field photos, review, retrain."""
    try:
        ctx.obj = get_settings()
    except ValidationError as exc:
        raise click.UsageError(f"invalid HERPSCORE_* setting:\n{exc}") from None


for command in (
    database.init_cmd,
    database.db_group,
    models.models_group,
    keys.keys_group,
    scoring.score_cmd,
    jobs.jobs_group,
    jobs.results_cmd,
    users.users_group,
    exports.export_cmd,
    training.retrain_cmd,
    training.training_group,
    stack.up_cmd,
    field.species_group,
    field.sites_group,
):
    main.add_command(command)
