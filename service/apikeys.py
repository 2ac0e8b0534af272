"""API keys: create, verify, revoke and list; only a sha256 of each key is ever stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service import audit
from service.db import get_or_not_found
from service.errors import BadInput, InvalidState, Unauthorized
from service.models import ApiKey, Role, User, utcnow

KEY_SCHEME = "hs_"
PREFIX_CHARS = 8
SECRET_BYTES = 32
# last_used_at is a hint for humans, not an audit log: one write a minute per key is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)
_PREFIX_END = len(KEY_SCHEME) + PREFIX_CHARS
# Compared against when the prefix is unknown, so a miss costs the same as a wrong secret.
_DUMMY_HASH = hashlib.sha256(b"herpscore-no-such-key").hexdigest()


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _new_prefix() -> str:
    # token_urlsafe(6) is exactly 8 characters of [A-Za-z0-9_-].
    return secrets.token_urlsafe(6)[:PREFIX_CHARS]


def _split(presented: str) -> str | None:
    """The prefix of a well-formed key, or None: `hs_` + 8 chars + `_` + secret."""
    if (
        len(presented) <= _PREFIX_END + 1
        or len(presented) > 512
        or not presented.startswith(KEY_SCHEME)
        or presented[_PREFIX_END] != "_"
    ):
        return None
    return presented[len(KEY_SCHEME) : _PREFIX_END]


def create_key(
    session: Session,
    name: str,
    role: Role | str,
    *,
    user_id: int | None = None,
    actor: str = "",
) -> tuple[ApiKey, str]:
    """Record a new key and return it with its plaintext, which is never shown again.

    `user_id` ties the key to a user: while that user is disabled, the key is refused.
    """
    name = name.strip()
    if not name or len(name) > 200 or not name.isprintable():
        raise BadInput("key name must be 1 to 200 printable characters")
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise InvalidState(f"an API key named {name!r} already exists")
    if user_id is not None:
        get_or_not_found(session, User, user_id, "user")
    try:
        role = Role(role)
    except ValueError:
        raise BadInput(f"unknown role {role!r}", {"allowed": [r.value for r in Role]}) from None
    prefix = _new_prefix()
    while session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is not None:
        prefix = _new_prefix()  # 64**8 prefixes: a collision is rare but must not fail
    plaintext = f"{KEY_SCHEME}{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    key = ApiKey(name=name, prefix=prefix, key_hash=_hash(plaintext), role=role, user_id=user_id)
    session.add(key)
    session.flush()
    audit.record(
        session, actor, "key.create", audit.key_principal(key.id), name=name, role=role.value
    )
    return key, plaintext


def verify_key(session: Session, presented: str, *, note_use: bool = True) -> ApiKey:
    """The live key matching `presented`; raises Unauthorized for unknown, wrong or revoked keys.

    `note_use=False` leaves last_used_at alone, for a read-only session (see `note_use`).
    """
    prefix = _split(presented)
    key = None
    if prefix is not None:
        key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    expected = key.key_hash if key is not None else _DUMMY_HASH
    if not hmac.compare_digest(expected, _hash(presented)) or key is None:
        raise Unauthorized("invalid API key")
    if key.revoked_at is not None:
        raise Unauthorized("this API key has been revoked")
    if key.user_id is not None:
        owner = session.get(User, key.user_id)
        if owner is not None and owner.disabled:
            raise Unauthorized("this API key's user is disabled")
    if note_use and use_is_unrecorded(key):
        key.last_used_at = utcnow()
    return key


def use_is_unrecorded(key: ApiKey) -> bool:
    """True when last_used_at is older than its resolution (a write is due)."""
    return key.last_used_at is None or utcnow() - key.last_used_at >= LAST_USED_RESOLUTION


def note_use(session: Session, key_id: int) -> None:
    """Record that a key was used just now."""
    key = session.get(ApiKey, key_id)
    if key is not None:
        key.last_used_at = utcnow()


def revoke_key(session: Session, key_id: int, actor: str = "") -> ApiKey:
    """Revoke a key for good; revoking a revoked key changes nothing."""
    key = get_or_not_found(session, ApiKey, key_id, "API key")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        audit.record(session, actor, "key.revoke", audit.key_principal(key.id), name=key.name)
        session.flush()
    return key


def list_keys(session: Session) -> list[ApiKey]:
    """Every key, newest first, revoked ones included."""
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id.desc())))


def key_to_dict(key: ApiKey) -> dict[str, Any]:
    """The public JSON shape of a key: never its hash, never its secret."""
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "role": key.role.value,
        "user_id": key.user_id,
        "created_at": key.created_at.isoformat(),
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }
