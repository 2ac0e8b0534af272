"""Fixtures for the HTTP API tests: a fresh app per test, keys of every role, a model."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service import apikeys, registry
from service.db import dispose_engines, session_scope
from service.migrate import upgrade
from service.models import Base, ModelVersion, Role
from service.settings import Settings
from service.web import create_app
from tests.support.models import make_model_folder
from tests.support.openapi import describe, install_checker

Headers = dict[str, str]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied per test (migrating per test costs ~0.5 s)."""
    path = tmp_path_factory.mktemp("template") / "herpscore.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def api_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated database: a copied SQLite file, or the session's PostgreSQL
    database (see tests/conftest.py) with every table emptied."""
    if request.param == "sqlite":
        path = tmp_path / "herpscore.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_server")
        upgrade(url)  # a no-op at head; other fixtures may have dropped the schema
        with session_scope(url) as session:  # DELETE: far faster than TRUNCATE on tiny tables
            for table in reversed(Base.metadata.sorted_tables):
                session.execute(table.delete())
    yield url
    dispose_engines()


@pytest.fixture()
def api_settings(
    api_db_url: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> Settings:
    """Test settings on the parametrised database (SQLite and PostgreSQL), with the
    embedded broker in the test's own folder (tests.support.broker reads what it holds)."""
    return make_settings(api_db_url, registry_dir=tmp_path / "registry", broker_url=None)


@pytest.fixture()
def api_app(api_settings: Settings) -> Iterator[Flask]:
    """The app; every API answer a test provokes is also checked against the OpenAPI document."""
    app = create_app(api_settings)
    app.testing = True
    checker = install_checker(app)
    yield app
    assert not checker.failures, describe(checker.failures)


@pytest.fixture()
def api_client(api_app: Flask) -> FlaskClient:
    return api_app.test_client()


@pytest.fixture()
def make_key(api_settings: Settings) -> Callable[..., str]:
    """Create a key with a role and return its plaintext."""

    made: list[Role] = []

    def create(role: Role = Role.ADMIN, name: str | None = None) -> str:
        made.append(role)
        count = made.count(role)  # key names are unique: test-admin, test-admin-2, ...
        default = f"test-{role.value}" + (f"-{count}" if count > 1 else "")
        with session_scope(api_settings.db_url) as session:
            _, plaintext = apikeys.create_key(session, name or default, role)
        return plaintext

    return create


@pytest.fixture()
def auth(make_key: Callable[..., str]) -> Callable[[Role], Headers]:
    """Headers carrying a fresh key of the given role (one key per role per test)."""
    made: dict[Role, Headers] = {}

    def headers(role: Role) -> Headers:
        if role not in made:
            made[role] = {"X-API-Key": make_key(role)}
        return made[role]

    return headers


@pytest.fixture()
def active_model(api_settings: Settings, tmp_path: Path) -> int:
    """A tiny registered model, active; returns its id."""
    folder = make_model_folder(tmp_path / "model-src")
    with session_scope(api_settings.db_url) as session:
        model: ModelVersion = registry.add_model(session, api_settings, folder, activate=True)
        return model.id
