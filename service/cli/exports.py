"""`herpscore export`: write verified labels into a new training-set folder, here and now."""

from __future__ import annotations

import json

import click

from service.cli.common import _settings
from service.db import session_scope


@click.command("export")
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
