"""Per-request access to the settings and to a database session that the view owns."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import cast

from flask import current_app
from sqlalchemy.orm import Session

from service.db import read_scope, session_scope
from service.settings import Settings


def current_settings() -> Settings:
    """The Settings that `create_app` was built with."""
    return cast(Settings, current_app.extensions["herpscore"])


def db_session() -> AbstractContextManager[Session]:
    """One transaction: `with db_session() as session:` commits on success, rolls back on error."""
    return session_scope(current_settings().db_url, custom_plans=True)


def db_read() -> AbstractContextManager[Session]:
    """A read-only transaction: never waits behind a worker's write on SQLite."""
    return read_scope(current_settings().db_url, custom_plans=True)
