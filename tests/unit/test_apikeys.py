"""API keys: format, hashing, verification, revocation and the last-used throttle."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from service import apikeys
from service.db import session_scope
from service.errors import BadInput, NotFound, Unauthorized
from service.models import ApiKey, Role, utcnow


@pytest.fixture()
def session(sqlite_url: str) -> Iterator[Session]:
    with session_scope(sqlite_url) as session:
        yield session


def test_create_key_returns_plaintext_once_and_stores_only_its_hash(session: Session) -> None:
    key, plaintext = apikeys.create_key(session, "field laptop", Role.REVIEWER)
    assert plaintext.startswith("hs_") and plaintext[11] == "_"
    assert plaintext[3:11] == key.prefix and len(key.prefix) == 8
    assert len(plaintext[12:]) >= 43  # token_urlsafe(32)
    assert key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    stored = [key.name, key.prefix, key.key_hash, key.role.value]
    assert not any(plaintext[12:] in str(value) for value in stored)
    assert key.role == Role.REVIEWER and key.revoked_at is None


def test_keys_are_unique(session: Session) -> None:
    made = [apikeys.create_key(session, f"k{i}", Role.VIEWER) for i in range(20)]
    assert len({plain for _, plain in made}) == 20
    assert len({key.prefix for key, _ in made}) == 20


def test_prefix_collision_draws_again(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    first, _ = apikeys.create_key(session, "first", Role.VIEWER)
    prefixes = iter([first.prefix, first.prefix, "fresh123"])
    monkeypatch.setattr(apikeys, "_new_prefix", lambda: next(prefixes))
    second, plaintext = apikeys.create_key(session, "second", Role.VIEWER)
    assert second.prefix == "fresh123" and plaintext.startswith("hs_fresh123_")


@pytest.mark.parametrize(
    ("name", "role"), [("", Role.VIEWER), ("  ", "admin"), ("x" * 201, "viewer"), ("ok", "root")]
)
def test_create_key_rejects_bad_input(session: Session, name: str, role: str) -> None:
    with pytest.raises(BadInput):
        apikeys.create_key(session, name, role)


def test_create_key_accepts_role_names(session: Session) -> None:
    key, _ = apikeys.create_key(session, "admin key", "admin")
    assert key.role == Role.ADMIN


def test_verify_key_finds_the_key(session: Session) -> None:
    key, plaintext = apikeys.create_key(session, "k", Role.VIEWER)
    assert apikeys.verify_key(session, plaintext) is key


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "hs_",
        "hs_abcdefgh",
        "hs_abcdefgh_",
        "xx_abcdefgh_secret",
        "hs_abcdefghXsecret",
        "hs_" + "a" * 600,
    ],
)
def test_verify_key_rejects_malformed_keys(session: Session, presented: str) -> None:
    apikeys.create_key(session, "k", Role.VIEWER)
    with pytest.raises(Unauthorized):
        apikeys.verify_key(session, presented)


def test_verify_key_rejects_wrong_secret_and_unknown_prefix(session: Session) -> None:
    _, plaintext = apikeys.create_key(session, "k", Role.VIEWER)
    with pytest.raises(Unauthorized, match="invalid"):
        apikeys.verify_key(session, plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B"))
    with pytest.raises(Unauthorized, match="invalid"):
        apikeys.verify_key(session, "hs_zzzzzzzz" + plaintext[11:])


def test_revoked_key_is_refused(session: Session) -> None:
    key, plaintext = apikeys.create_key(session, "k", Role.ADMIN)
    revoked = apikeys.revoke_key(session, key.id)
    assert revoked.revoked_at is not None
    with pytest.raises(Unauthorized, match="revoked"):
        apikeys.verify_key(session, plaintext)


def test_revoke_is_idempotent_and_checks_the_id(session: Session) -> None:
    key, _ = apikeys.create_key(session, "k", Role.ADMIN)
    first = apikeys.revoke_key(session, key.id).revoked_at
    assert apikeys.revoke_key(session, key.id).revoked_at == first
    with pytest.raises(NotFound):
        apikeys.revoke_key(session, 424242)


def test_last_used_is_written_at_most_once_a_minute(session: Session) -> None:
    key, plaintext = apikeys.create_key(session, "k", Role.VIEWER)
    assert key.last_used_at is None
    apikeys.verify_key(session, plaintext)
    first = key.last_used_at
    assert first is not None
    apikeys.verify_key(session, plaintext)
    assert key.last_used_at == first  # no write within the minute
    key.last_used_at = utcnow() - timedelta(minutes=2)
    apikeys.verify_key(session, plaintext)
    assert key.last_used_at > first


def test_list_keys_newest_first_and_key_to_dict_hides_secrets(session: Session) -> None:
    old, _ = apikeys.create_key(session, "old", Role.VIEWER)
    new, plaintext = apikeys.create_key(session, "new", Role.ADMIN)
    apikeys.revoke_key(session, old.id)
    keys = apikeys.list_keys(session)
    assert [k.name for k in keys] == ["new", "old"]
    shown = apikeys.key_to_dict(new)
    assert set(shown) == {
        "id",
        "name",
        "prefix",
        "role",
        "user_id",
        "created_at",
        "last_used_at",
        "revoked_at",
    }
    assert plaintext not in str(shown) and new.key_hash not in str(shown)
    assert apikeys.key_to_dict(old)["revoked_at"] is not None


def test_keys_survive_a_new_session(sqlite_url: str) -> None:
    with session_scope(sqlite_url) as session:
        _, plaintext = apikeys.create_key(session, "k", Role.REVIEWER)
    with session_scope(sqlite_url) as session:
        key = apikeys.verify_key(session, plaintext)
        assert isinstance(key, ApiKey) and key.role == Role.REVIEWER
