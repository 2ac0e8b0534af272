"""`herpscore species` and `herpscore sites` (the species table, survey sites)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import click

from service import sites, species
from service.cli.common import _settings
from service.db import read_scope, session_scope
from service.errors import BadInput


@click.group("species")
def species_group() -> None:
    """The species table: taxonomy, venom, look-alikes, per-species review thresholds."""


@species_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def species_import(ctx: click.Context, file: Path) -> None:
    """Create or update species from FILE.csv (a `label` column and any of the others)."""
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {file}: {exc}") from None
    with session_scope(_settings(ctx).db_url) as session:
        count = species.import_csv(session, io.StringIO(text))
    click.echo(f"{count} species imported", err=True)


@species_group.command("export")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def species_export(ctx: click.Context, output: Path | None) -> None:
    """Write the species table as CSV (to standard output by default)."""
    with read_scope(_settings(ctx).db_url) as session:
        if output is None:
            species.export_csv(session, sys.stdout)
            return
        with output.open("w", newline="", encoding="utf-8") as fh:
            species.export_csv(session, fh)


@click.group("sites")
def sites_group() -> None:
    """Survey sites: coordinates, UTC offset, camera clock correction."""


@sites_group.command("list")
@click.pass_context
def sites_list(ctx: click.Context) -> None:
    """List sites."""
    with read_scope(_settings(ctx).db_url) as session:
        for s in sites.list_sites(session):
            d = sites.site_to_dict(s)
            where = f"{d['latitude']},{d['longitude']}" if d["latitude"] is not None else "-"
            click.echo(
                f"{d['name']:<24} {where:<24} offset {d['utc_offset'] or '-':<7} "
                f"clock {d['clock_correction_seconds']:+d}s"
            )


@sites_group.command("set")
@click.argument("name")
@click.option("--lat", "latitude", type=float)
@click.option("--lon", "longitude", type=float)
@click.option("--utc-offset", help="e.g. +08:00; used when a photo's EXIF has no offset.")
@click.option("--clock-correction", type=int, help="Seconds added to every camera time.")
@click.option("--notes")
@click.pass_context
def sites_set(ctx: click.Context, name: str, **options: object) -> None:
    """Create a site or change the fields given."""
    fields = {k: v for k, v in options.items() if v is not None}
    if "clock_correction" in fields:
        fields["clock_correction_seconds"] = fields.pop("clock_correction")
    with session_scope(_settings(ctx).db_url) as session:
        saved = sites.site_to_dict(sites.save_site(session, name, **fields))
    click.echo(f"site {saved['name']} saved", err=True)


@sites_group.command("delete")
@click.argument("name")
@click.pass_context
def sites_delete(ctx: click.Context, name: str) -> None:
    """Delete a site."""
    with session_scope(_settings(ctx).db_url) as session:
        sites.delete_site(session, name)
