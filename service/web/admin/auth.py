"""Logging in and out of the UI: Flask-Login sessions backed by service.users."""

from __future__ import annotations

from dataclasses import dataclass

from flask import abort, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from service import users
from service.errors import Unauthorized
from service.models import Role, User
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
    login_id: str  # "<id>:<session version>", what the session cookie holds

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        return self.login_id

    @property
    def principal(self) -> str:
        """Who acts, as recorded on decisions and in the audit log (usernames are unique)."""
        return self.username

    @classmethod
    def of(cls, user: User) -> SessionUser:
        return cls(user.id, user.username, user.role, users.session_id(user))


@login_manager.user_loader
def _load_user(login_id: str) -> SessionUser | None:
    """Re-read the user on every request: a disabled user, a changed role, a logout or a new
    password (each bumps the user's session version) acts at once, copied cookies included."""
    with db_read() as db:
        user = users.user_for_session(db, login_id)
        return SessionUser.of(user) if user else None


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=100)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> ResponseReturnValue:
    next_url = request.args.get("next")
    if next_url and not next_url.isprintable():  # CR/LF would split the redirect's headers
        abort(400, "the next= address is not valid")
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("login.html", form=form), 400 if form.errors else 200
    try:
        with db_session() as db:
            user = users.authenticate(db, form.username.data or "", form.password.data or "")
            who = SessionUser.of(user)
    except Unauthorized as exc:
        flash(exc.message, "error")
        return render_template("login.html", form=form), 401
    session.clear()  # nothing from before the login survives it
    login_user(who)
    return redirect(safe_next_url(next_url, url_for("admin.dashboard")), 303)


@bp.post("/logout")
@role_required(Role.VIEWER)
def logout() -> ResponseReturnValue:
    """Log out everywhere: the session version moves on, so a copied cookie dies too."""
    with db_session() as db:
        user = users.get_user(db, current_user.id)
        if user is not None:
            users.end_sessions(user)
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("admin.login"), 303)
