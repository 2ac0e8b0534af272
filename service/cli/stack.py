"""`herpscore up`: the embedded stack in one command (web UI + API, workers, scheduler)."""

from __future__ import annotations

import click

from service.cli.common import _hint_if_no_model, _settings
from service.embedded import embedded_worker


@click.command("up")
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
    _hint_if_no_model(settings)
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
