"""UI users: hashed passwords, unique names, one vague error for every failed login; the CLI."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner

from service import users
from service.cli import main
from service.db import session_scope
from service.errors import BadInput, InvalidState, NotFound, Unauthorized
from service.models import Role
from service.settings import Settings

PASSWORD = "tokay-gecko-42"


def test_create_stores_only_a_salted_hash(sqlite_url: str) -> None:
    with session_scope(sqlite_url) as session:
        a = users.create_user(session, "ana", PASSWORD, Role.REVIEWER)
        b = users.create_user(session, "bo", PASSWORD, Role.VIEWER)
        assert PASSWORD not in a.password_hash
        assert a.password_hash != b.password_hash  # salted
        assert [u.username for u in users.list_users(session)] == ["ana", "bo"]


def test_authenticate(sqlite_url: str) -> None:
    with session_scope(sqlite_url) as session:
        users.create_user(session, "Ana", PASSWORD, Role.ADMIN)
    with session_scope(sqlite_url) as session:
        user = users.authenticate(session, " ana ", PASSWORD)
        assert (user.username, user.role) == ("Ana", Role.ADMIN)
        assert user.last_login_at is not None
        for name, password in [
            ("ana", "wrong-password"),
            ("nobody", PASSWORD),
            ("ana", "x" * 5000),
        ]:
            with pytest.raises(Unauthorized, match="wrong username or password"):
                users.authenticate(session, name, password)
        user.disabled = True
        with pytest.raises(Unauthorized):
            users.authenticate(session, "ana", PASSWORD)
        assert users.get_user(session, user.id) is None


@pytest.mark.parametrize(
    ("username", "password", "error"),
    [
        ("", PASSWORD, BadInput),
        ("has space", PASSWORD, BadInput),
        ("-dash-first", PASSWORD, BadInput),
        ("x" * 101, PASSWORD, BadInput),
        ("ana", "short", BadInput),
        ("ana", "p" * 2000, BadInput),
        ("ANA", PASSWORD, InvalidState),  # names are unique regardless of case
        # The audit log's actors that are not users: a user named so would pass for them.
        ("cli", PASSWORD, BadInput),
        ("System", PASSWORD, BadInput),
        ("retraining", PASSWORD, BadInput),
    ],
)
def test_create_refuses_bad_input(
    sqlite_url: str, username: str, password: str, error: type[Exception]
) -> None:
    with session_scope(sqlite_url) as session:
        users.create_user(session, "ana", PASSWORD, Role.VIEWER)
        with pytest.raises(error):
            users.create_user(session, username, password, Role.VIEWER)


def test_set_password(sqlite_url: str) -> None:
    with session_scope(sqlite_url) as session:
        users.create_user(session, "ana", PASSWORD, Role.VIEWER)
        users.set_password(session, "ana", "a-new-password")
        users.authenticate(session, "ana", "a-new-password")
        with pytest.raises(NotFound):
            users.set_password(session, "bo", "a-new-password")


def test_cli_creates_and_lists_users(
    sqlite_url: str, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(sqlite_url)
    monkeypatch.setenv("HERPSCORE_DATABASE_URL", settings.db_url)
    monkeypatch.setenv("HERPSCORE_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    created = runner.invoke(
        main,
        ["users", "create", "ana", "--role", "reviewer", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert created.exit_code == 0, created.output
    assert "ana (reviewer) created" in created.output and PASSWORD not in created.output
    listed = runner.invoke(main, ["users", "list"])
    assert "reviewer" in listed.output and "ana" in listed.output and "never" in listed.output
    with session_scope(sqlite_url) as session:
        assert users.authenticate(session, "ana", PASSWORD).role == Role.REVIEWER

    duplicate = runner.invoke(
        main, ["users", "create", "ana", "--role", "admin", "--password-stdin"], input="x" * 9
    )
    assert duplicate.exit_code == 2 and "already exists" in duplicate.output
    no_terminal = runner.invoke(main, ["users", "create", "bo", "--role", "viewer"])
    assert no_terminal.exit_code == 2 and "--password-stdin" in no_terminal.output
    bad_role = runner.invoke(main, ["users", "create", "bo", "--role", "root"])
    assert bad_role.exit_code == 2
