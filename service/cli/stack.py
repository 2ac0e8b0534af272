"""`herpscore up`: the embedded stack in one command (web UI + API, workers, scheduler)."""

from __future__ import annotations

import click

from service.cli.common import _hint_if_no_model, _settings
from service.embedded import embedded_worker
from service.settings import Settings

# A browser opens up to six connections to one host (the review page's preloads and the
# thumbnails arrive together); two more keep the API answering while they are served.
WEB_THREADS = 8


@click.command("up")
@click.option("--host", help="Web address (default from settings).")
@click.option("--port", type=int, help="Web port (default from settings).")
@click.pass_context
def up_cmd(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the embedded stack in one command: web UI + API, the workers and the scheduler."""
    from waitress.server import create_server

    from service.migrate import upgrade
    from service.web import create_app

    settings = _settings(ctx)
    settings.ensure_dirs()
    upgrade(settings.db_url)
    _hint_if_no_model(settings)
    _hint_if_no_user(settings)
    host, port = host or settings.web_host, port or settings.web_port
    try:  # bind first: a port in use is one line on stderr, before any worker starts
        server = create_server(create_app(settings), host=host, port=port, threads=WEB_THREADS)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    with embedded_worker(settings, beat=True) as workers:
        pids = ", ".join(str(w.pid) for w in workers)
        click.echo(f"worker pids {pids}; database {settings.db_url}", err=True)
        click.echo(f"serving on http://{host}:{port} (waitress, {WEB_THREADS} threads)", err=True)
        server.run()  # returns once SIGTERM or Ctrl-C stops it; the workers stop next


def _hint_if_no_user(settings: Settings) -> None:
    """Nobody can sign in to the web UI until a user exists: say how to make the first."""
    from service.db import read_scope
    from service.users import list_users

    with read_scope(settings.db_url) as session:
        if list_users(session):
            return
    click.echo(
        "no web UI user yet: `herpscore users create NAME --role admin` creates the first "
        "(it asks for a password)",
        err=True,
    )
