"""Who may call what: API keys from the request headers, checked against each view's role.

Every API view declares its access with `@requires(Role.X)` or `@public`; a view that
declares nothing needs an admin key (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import g, request
from werkzeug.datastructures import Headers

from service import apikeys, audit
from service.errors import Forbidden, Unauthorized
from service.models import Role
from service.web.context import db_read, db_session

View = TypeVar("View", bound=Callable[..., Any])

# view function -> the least role it needs; None marks a public view.
_ACCESS: dict[Callable[..., Any], Role | None] = {}


@dataclass(frozen=True)
class Caller:
    """The key behind the current request (detached from any session)."""

    key_id: int
    name: str
    role: Role

    @property
    def principal(self) -> str:
        """Who acts, as recorded on decisions and in the audit log (never the key's name)."""
        return audit.key_principal(self.key_id)


def requires(role: Role) -> Callable[[View], View]:
    """Declare the least role a view needs (admin > reviewer > viewer)."""

    def mark(view: View) -> View:
        _ACCESS[view] = role
        return view

    return mark


def public(view: View) -> View:
    """Declare a view that needs no key (health, documentation)."""
    _ACCESS[view] = None
    return view


def declared_access(view: Callable[..., Any]) -> Role | None:
    """The role a view needs, None if public; undeclared views need admin."""
    return _ACCESS.get(view, Role.ADMIN)


def is_declared(view: Callable[..., Any]) -> bool:
    return view in _ACCESS


def presented_key(headers: Headers) -> str | None:
    """The key from `X-API-Key: <key>` or, failing that, `Authorization: Bearer <key>`."""
    key = headers.get("X-API-Key", "").strip()
    if key:
        return key
    scheme, _, token = headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def authorize(view: Callable[..., Any]) -> None:
    """Check the request's key against the view's role; remember the caller in `g`."""
    needed = declared_access(view)
    if needed is None:
        return
    presented = presented_key(request.headers)
    if presented is None:
        raise Unauthorized("an API key is required: send it in the X-API-Key header")
    with db_read() as session:  # a read: no request waits for SQLite's write lock to be let in
        key = apikeys.verify_key(session, presented, note_use=False)
        caller = Caller(key_id=key.id, name=key.name, role=key.role)
        unrecorded = apikeys.use_is_unrecorded(key)
    if unrecorded:  # at most once a minute per key
        with db_session() as session:
            apikeys.note_use(session, caller.key_id)
    if not caller.role.allows(needed):
        raise Forbidden(
            f"this action needs the {needed.value} role; this key has {caller.role.value}",
            {"required_role": needed.value, "key_role": caller.role.value},
        )
    g.caller = caller


def current_caller() -> Caller:
    """The caller of the current (authenticated) request."""
    caller: Caller = g.caller
    return caller
