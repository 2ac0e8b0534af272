"""User management and the audit log (admin only): list users, disable or enable one,
change a role; read the audit log page by page."""

from __future__ import annotations

from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from service import audit, users
from service.errors import NotFound
from service.models import Role, User
from service.web.api import bp
from service.web.api.inputs import Body, PageQuery, page, parse_body, parse_query
from service.web.auth import current_caller, requires
from service.web.context import db_read, db_session


class RoleChange(Body):
    role: Role


def _username(session: Session, user_id: int) -> str:
    """The name of a user by id (the domain functions take names, as the CLI does)."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist")
    return user.username


@bp.get("/users")
@requires(Role.ADMIN)
def list_users() -> ResponseReturnValue:
    with db_read() as session:
        items = [users.user_to_dict(u) for u in users.list_users(session)]
    return {"items": items, "total": len(items)}


@bp.post("/users/<id:user_id>/disable")
@requires(Role.ADMIN)
def disable_user(user_id: int) -> ResponseReturnValue:
    """Disable a user: their sessions and their keys stop working at once."""
    with db_session() as session:
        name = _username(session, user_id)
        user = users.set_disabled(session, name, True, actor=current_caller().principal)
        return users.user_to_dict(user)


@bp.post("/users/<id:user_id>/enable")
@requires(Role.ADMIN)
def enable_user(user_id: int) -> ResponseReturnValue:
    with db_session() as session:
        name = _username(session, user_id)
        user = users.set_disabled(session, name, False, actor=current_caller().principal)
        return users.user_to_dict(user)


@bp.post("/users/<id:user_id>/role")
@requires(Role.ADMIN)
def set_user_role(user_id: int) -> ResponseReturnValue:
    body = parse_body(RoleChange)
    with db_session() as session:
        name = _username(session, user_id)
        user = users.set_role(session, name, body.role, actor=current_caller().principal)
        return users.user_to_dict(user)


@bp.get("/audit")
@requires(Role.ADMIN)
def list_audit() -> ResponseReturnValue:
    """Admin actions, newest first: who (a principal), what, on what, when."""
    query = parse_query(PageQuery)
    with db_read() as session:
        entries, total = audit.list_entries(session, query.limit, query.offset)
        return page([audit.entry_to_dict(e) for e in entries], total, query)
