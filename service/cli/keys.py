"""`herpscore keys`: API keys (create, list, revoke)."""

from __future__ import annotations

import click

from service.cli.common import _settings
from service.db import session_scope
from service.models import Role


@click.group("keys")
def keys_group() -> None:
    """API keys."""


@keys_group.command("create")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--name", help="Who or what uses the key (unique; default cli-<random>).")
@click.option("--user", "username", help="The user it acts for: it stops while they are disabled.")
@click.pass_context
def keys_create(ctx: click.Context, role: str, name: str | None, username: str | None) -> None:
    """Create an API key; it is shown once and stored only as a hash."""
    import secrets

    from service.apikeys import create_key
    from service.users import require_user

    with session_scope(_settings(ctx).db_url) as session:
        user_id = require_user(session, username).id if username else None
        name = name or f"cli-{secrets.token_hex(3)}"
        key, secret = create_key(session, name, Role(role), user_id=user_id, actor="cli")
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
        revoke_key(session, key_id, actor="cli")
    click.echo(f"key {key_id} revoked")
