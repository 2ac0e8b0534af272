"""Logging in and out of the UI: Flask-Login sessions backed by service.users."""

from __future__ import annotations

from dataclasses import dataclass

from flask import flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import LoginManager, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from service import users
from service.errors import Unauthorized
from service.models import Role
from service.web.admin import bp, public, role_required, safe_next_url
from service.web.context import db_read, db_session

login_manager = LoginManager()
login_manager.login_view = "admin.login"
login_manager.login_message = "Please log in to see this page."
login_manager.login_message_category = "info"


@dataclass(frozen=True)
class SessionUser:
    """The logged-in user as the views see it (detached from any database session)."""

    id: int
    username: str
    role: Role

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        return str(self.id)


@login_manager.user_loader
def _load_user(user_id: str) -> SessionUser | None:
    """Re-read the user on every request: a disabled user or a changed role acts at once."""
    if not user_id.isdigit():
        return None
    with db_read() as db:  # every UI request: never behind a worker's write
        user = users.get_user(db, int(user_id))
        return SessionUser(user.id, user.username, user.role) if user else None


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=100)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> ResponseReturnValue:
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("login.html", form=form), 400 if form.errors else 200
    try:
        with db_session() as db:
            user = users.authenticate(db, form.username.data or "", form.password.data or "")
            who = SessionUser(user.id, user.username, user.role)
    except Unauthorized as exc:
        flash(exc.message, "error")
        return render_template("login.html", form=form), 401
    session.clear()  # nothing from before the login survives it
    login_user(who)
    return redirect(safe_next_url(request.args.get("next"), url_for("admin.dashboard")), 303)


@bp.post("/logout")
@role_required(Role.VIEWER)
def logout() -> ResponseReturnValue:
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("admin.login"), 303)
