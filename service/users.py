"""People who log into the admin UI: creation, listing and password checks (hashes only)."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from service import audit
from service.errors import BadInput, InvalidState, NotFound, Unauthorized
from service.models import Role, User, utcnow

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # hashing a megabyte "password" is a cheap denial of service

# Checked when the username is unknown, so a wrong name costs as much time as a wrong password.
_DUMMY_HASH = generate_password_hash("herpscore-dummy-password")


def _check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadInput(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise BadInput(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")


def create_user(
    session: Session, username: str, password: str, role: Role, actor: str = ""
) -> User:
    """Record a user with a salted password hash; the username is unique (case-insensitive)."""
    username = username.strip()
    if not USERNAME_RE.match(username):
        raise BadInput(
            "the username must be 1-100 characters: letters, digits and . _ @ -, "
            "starting with a letter or digit"
        )
    if username.lower() in audit.NOT_USERS:
        raise BadInput(f"{username!r} names the audit log's non-user actors: choose another name")
    _check_password_rules(password)
    if find_user(session, username) is not None:
        raise InvalidState(f"user {username!r} already exists")
    user = User(username=username, password_hash=generate_password_hash(password), role=role)
    session.add(user)
    session.flush()
    audit.record(session, actor, "user.create", user.username, role=role.value)
    return user


def find_user(session: Session, username: str) -> User | None:
    """The user with this name (case-insensitive), or None."""
    return session.scalar(select(User).where(func.lower(User.username) == username.lower()))


def get_user(session: Session, user_id: int) -> User | None:
    """The user with this id if it exists and is not disabled."""
    user = session.get(User, user_id)
    return None if user is None or user.disabled else user


def list_users(session: Session) -> list[User]:
    """Every user, by name."""
    return list(session.scalars(select(User).order_by(User.username)))


def authenticate(session: Session, username: str, password: str) -> User:
    """The user whose name and password match; one vague Unauthorized for every failure."""
    user = find_user(session, username.strip()) if len(password) <= MAX_PASSWORD_LENGTH else None
    stored = user.password_hash if user is not None else _DUMMY_HASH
    if not check_password_hash(stored, password) or user is None or user.disabled:
        raise Unauthorized("wrong username or password")
    user.last_login_at = utcnow()
    return user


def require_user(session: Session, username: str) -> User:
    """The user with this name, disabled or not; NotFound otherwise."""
    user = find_user(session, username.strip())
    if user is None:
        raise NotFound(f"user {username!r} does not exist")
    return user


def session_id(user: User) -> str:
    """The login id a session stores: the user id and the user's current session version."""
    return f"{user.id}:{user.session_version}"


def user_for_session(session: Session, login_id: str) -> User | None:
    """The live user a session's login id names, or None once its version was bumped."""
    user_id, _, version = login_id.partition(":")
    if not user_id.isdigit() or not version.isdigit():
        return None  # includes sessions from before versions existed
    user = get_user(session, int(user_id))
    return user if user is not None and user.session_version == int(version) else None


def end_sessions(user: User) -> None:
    """Every session of this user, on every device, stops working at its next request."""
    user.session_version += 1


def set_password(session: Session, username: str, password: str, actor: str = "") -> User:
    """Replace a user's password; every session of the user ends."""
    _check_password_rules(password)
    user = require_user(session, username)
    user.password_hash = generate_password_hash(password)
    end_sessions(user)
    audit.record(session, actor, "user.set_password", user.username)
    return user


def set_disabled(session: Session, username: str, disabled: bool, actor: str = "") -> User:
    """Disable (or enable) a user: a disabled user's sessions and keys stop at once."""
    user = require_user(session, username)
    if disabled and user.role is Role.ADMIN and not user.disabled:
        _keep_an_admin(session, user)
    if user.disabled != disabled:
        user.disabled = disabled
        end_sessions(user)
        audit.record(session, actor, "user.disable" if disabled else "user.enable", user.username)
    return user


def set_role(session: Session, username: str, role: Role | str, actor: str = "") -> User:
    """Change a user's role; it applies to the user's next request."""
    try:
        role = Role(role)
    except ValueError:
        raise BadInput(f"unknown role {role!r}", {"allowed": [r.value for r in Role]}) from None
    user = require_user(session, username)
    if user.role is Role.ADMIN and role is not Role.ADMIN and not user.disabled:
        _keep_an_admin(session, user)
    if user.role is not role:
        old = user.role.value
        audit.record(session, actor, "user.set_role", user.username, old=old, new=role.value)
        user.role = role
    return user


def _keep_an_admin(session: Session, leaving: User) -> None:
    """Refuse to remove the last enabled admin (nobody could manage users from the UI)."""
    others = session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.role == Role.ADMIN, User.disabled.is_(False), User.id != leaving.id)
    )
    if not others:
        raise InvalidState(f"{leaving.username!r} is the last enabled admin")


def user_to_dict(user: User) -> dict[str, object]:
    """The public JSON shape of a user: never the password hash."""
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role.value,
        "disabled": user.disabled,
        "created_at": user.created_at.isoformat(),
        "last_login_at": user.last_login_at.isoformat() if user.last_login_at else None,
    }
