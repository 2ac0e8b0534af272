"""Alembic environment: the URL comes from herpscore's settings unless the caller set one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import context
from sqlalchemy import create_engine, make_url, pool

from service.models import Base, UTCDateTime
from service.settings import get_settings

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().db_url
parsed = make_url(url)
if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
    Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render herpscore's UTCDateTime as a plain timezone-aware DateTime in migrations."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations_offline() -> None:
    context.configure(
        url=url, target_metadata=Base.metadata, render_as_batch=True, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=True,
            render_item=render_item,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
