"""User management and the audit log (admin only): list users, disable or enable one,
change a role; read the audit log page by page."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from service import audit, users
from service.db import get_or_not_found
from service.models import Role, User
from service.web.api import bp
from service.web.api.inputs import Body, PageQuery, page
from service.web.api.operations import ItemList, Output, Page, operation
from service.web.auth import current_caller, requires
from service.web.context import db_read, db_session


class RoleChange(Body):
    """The new role; it applies to the user's next request."""

    role: Role


class UserOut(Output):
    """A UI user (never the password hash)."""

    id: int
    username: str
    role: Role
    disabled: bool
    """A disabled user's sessions and the keys tied to them stop at once."""
    created_at: datetime
    last_login_at: datetime | None


class UserList(ItemList[UserOut]):
    """Every user."""


class AuditEntry(Output):
    """One admin action."""

    id: int
    created_at: datetime
    actor: str
    """The principal: a username, `key:<id>`, `cli` or `system`."""
    action: str
    target: str
    details: Any = None


class AuditPage(Page[AuditEntry]):
    """One page of the audit log, newest first."""


def _username(session: Session, user_id: int) -> str:
    """The name of a user by id (the domain functions take names, as the CLI does)."""
    return get_or_not_found(session, User, user_id, "user").username


@bp.get("/users")
@requires(Role.ADMIN)
@operation(UserList)
def list_users() -> ResponseReturnValue:
    """List UI users."""
    with db_read() as session:
        items = [users.user_to_dict(u) for u in users.list_users(session)]
    return {"items": items, "total": len(items)}


@bp.post("/users/<id:user_id>/disable")
@requires(Role.ADMIN)
@operation(UserOut, errors=(409,))
def disable_user(user_id: int) -> ResponseReturnValue:
    """Disable a user.

    Their sessions and their keys stop working at once. 409 for the last enabled admin.
    """
    with db_session() as session:
        name = _username(session, user_id)
        user = users.set_disabled(session, name, True, actor=current_caller().principal)
        return users.user_to_dict(user)


@bp.post("/users/<id:user_id>/enable")
@requires(Role.ADMIN)
@operation(UserOut)
def enable_user(user_id: int) -> ResponseReturnValue:
    """Enable a disabled user again."""
    with db_session() as session:
        name = _username(session, user_id)
        user = users.set_disabled(session, name, False, actor=current_caller().principal)
        return users.user_to_dict(user)


@bp.post("/users/<id:user_id>/role")
@requires(Role.ADMIN)
@operation(UserOut, body=RoleChange, errors=(409,))
def set_user_role(user_id: int, body: RoleChange) -> ResponseReturnValue:
    """Change a user's role.

    409 when it would demote the last enabled admin.
    """
    with db_session() as session:
        name = _username(session, user_id)
        user = users.set_role(session, name, body.role, actor=current_caller().principal)
        return users.user_to_dict(user)


@bp.get("/audit")
@requires(Role.ADMIN)
@operation(AuditPage, query=PageQuery)
def list_audit(query: PageQuery) -> ResponseReturnValue:
    """Read the audit log.

    Admin actions, newest first: who (a principal), what, on what, when.
    """
    with db_read() as session:
        entries, total = audit.list_entries(session, query.limit, query.offset)
        return page([audit.entry_to_dict(e) for e in entries], total, query)
