"""`herpscore users`: people who log into the web UI."""

from __future__ import annotations

import sys

import click

from service.cli.common import _settings
from service.db import session_scope
from service.models import Role


@click.group("users")
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
        user = create_user(session, username, password, Role(role), actor="cli")
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
        set_password(session, username, password, actor="cli")
    click.echo(f"password of {username} changed; their sessions ended")


@users_group.command("disable")
@click.argument("username")
@click.pass_context
def users_disable(ctx: click.Context, username: str) -> None:
    """Disable a user: their sessions and the keys tied to them stop at once."""
    from service.users import set_disabled

    with session_scope(_settings(ctx).db_url) as session:
        set_disabled(session, username, True, actor="cli")
    click.echo(f"{username} disabled")


@users_group.command("enable")
@click.argument("username")
@click.pass_context
def users_enable(ctx: click.Context, username: str) -> None:
    """Enable a disabled user again."""
    from service.users import set_disabled

    with session_scope(_settings(ctx).db_url) as session:
        set_disabled(session, username, False, actor="cli")
    click.echo(f"{username} enabled")


@users_group.command("set-role")
@click.argument("username")
@click.argument("role", type=click.Choice([r.value for r in Role]))
@click.pass_context
def users_set_role(ctx: click.Context, username: str, role: str) -> None:
    """Change a user's role (it applies to their next request)."""
    from service.users import set_role

    with session_scope(_settings(ctx).db_url) as session:
        set_role(session, username, role, actor="cli")
    click.echo(f"{username} is now {role}")
