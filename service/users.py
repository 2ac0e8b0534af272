"""People who log into the admin UI: creation, listing and password checks (hashes only)."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

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


def create_user(session: Session, username: str, password: str, role: Role) -> User:
    """Record a user with a salted password hash; the username is unique (case-insensitive)."""
    username = username.strip()
    if not USERNAME_RE.match(username):
        raise BadInput(
            "the username must be 1-100 characters: letters, digits and . _ @ -, "
            "starting with a letter or digit"
        )
    _check_password_rules(password)
    if find_user(session, username) is not None:
        raise InvalidState(f"user {username!r} already exists")
    user = User(username=username, password_hash=generate_password_hash(password), role=role)
    session.add(user)
    session.flush()
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


def set_password(session: Session, username: str, password: str) -> User:
    """Replace a user's password."""
    _check_password_rules(password)
    user = find_user(session, username)
    if user is None:
        raise NotFound(f"user {username!r} does not exist")
    user.password_hash = generate_password_hash(password)
    return user
