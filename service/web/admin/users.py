"""Admin pages for people and accountability: users (disable, enable, role) and the audit log."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user

from service import audit, users
from service.errors import BadInput
from service.models import Role
from service.web.admin import bp, role_required
from service.web.context import db_read, db_session

AUDIT_PAGE = 50


@bp.get("/users")
@role_required(Role.ADMIN)
def list_users() -> ResponseReturnValue:
    with db_read() as session:
        return render_template("users.html", users=users.list_users(session), roles=list(Role))


@bp.post("/users/<username>/disable")
@role_required(Role.ADMIN)
def disable_user(username: str) -> ResponseReturnValue:
    """Disable a user: their sessions and keys stop at once."""
    with db_session() as session:
        user = users.set_disabled(session, username, True, actor=current_user.principal)
        flash(f"{user.username} is disabled; their sessions and keys stopped working.", "success")
    return redirect(url_for("admin.list_users"), 303)


@bp.post("/users/<username>/enable")
@role_required(Role.ADMIN)
def enable_user(username: str) -> ResponseReturnValue:
    with db_session() as session:
        user = users.set_disabled(session, username, False, actor=current_user.principal)
        flash(f"{user.username} is enabled.", "success")
    return redirect(url_for("admin.list_users"), 303)


@bp.post("/users/<username>/role")
@role_required(Role.ADMIN)
def set_user_role(username: str) -> ResponseReturnValue:
    role = request.form.get("role", "")
    if role not in {r.value for r in Role}:
        raise BadInput(f"unknown role {role!r}")
    with db_session() as session:
        user = users.set_role(session, username, role, actor=current_user.principal)
        flash(f"{user.username} is now {user.role.value}.", "success")
    return redirect(url_for("admin.list_users"), 303)


@bp.get("/audit")
@role_required(Role.ADMIN)
def audit_log() -> ResponseReturnValue:
    offset = request.args.get("offset", 0, type=int) or 0
    offset = min(max(offset, 0), 2**31 - 1)
    with db_read() as session:
        entries, total = audit.list_entries(session, AUDIT_PAGE, offset)
        return render_template(
            "audit.html", entries=entries, total=total, offset=offset, limit=AUDIT_PAGE
        )
