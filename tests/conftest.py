"""Shared fixtures: databases (SQLite and a throwaway PostgreSQL database), settings, models."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.db import dispose_engines
from service.migrate import upgrade
from service.settings import Settings

PG_ADMIN_URL = os.environ.get("HERPSCORE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("HERPSCORE_TEST_REDIS", "redis://127.0.0.1:6379/0")
# CI sets this so that a missing server fails the run instead of skipping its tests.
REQUIRE_SERVICES = os.environ.get("HERPSCORE_REQUIRE_SERVICES") == "1"
RATE_LIMIT_PREFIX = f"herpscore-test-{uuid.uuid4().hex[:12]}"


def screenshot_dir(tmp_path: Path) -> Path:
    """Where browser tests save screenshots: docs/screenshots with HERPSCORE_SCREENSHOTS=1
    (to refresh the README's pictures), else the test's temporary folder."""
    if os.environ.get("HERPSCORE_SCREENSHOTS") == "1":
        return Path(__file__).resolve().parents[1] / "docs" / "screenshots"
    return tmp_path


def pytest_sessionstart(session: pytest.Session) -> None:
    """Where CI installed Chromium for the browser tests, its absence is an error, not a skip."""
    if (
        os.environ.get("HERPSCORE_REQUIRE_BROWSER") == "1"
        and not Path("/usr/bin/chromium").exists()
    ):
        raise pytest.UsageError("HERPSCORE_REQUIRE_BROWSER=1 but /usr/bin/chromium is missing")


def skip_or_fail(reason: str) -> None:
    """Skip a test whose server is down, or fail it where CI promised the server."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (HERPSCORE_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; dropped at the end."""
    if not _pg_available():
        skip_or_fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
    import psycopg

    name = f"herpscore_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    yield f"{base}/{name}"
    dispose_engines()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def pg_url(pg_server: str) -> Iterator[str]:
    """The session's PostgreSQL database, emptied and migrated for this test."""
    from sqlalchemy import create_engine, text

    dispose_engines()
    engine = create_engine(pg_server)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    upgrade(pg_server)
    yield pg_server
    dispose_engines()


@pytest.fixture()
def redis_broker() -> Iterator[dict[str, str]]:
    """Broker settings on the test Redis with a key prefix of this test's own, as the
    PostgreSQL fixtures make a database per run: two runs (or two tests) sharing one Redis
    server never take each other's messages. The prefix's keys are deleted afterwards."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        skip_or_fail(f"Redis is not reachable at {REDIS_URL}")
    prefix = f"herpscore-test-{uuid.uuid4().hex[:12]}:"
    yield {"broker_url": REDIS_URL, "broker_key_prefix": prefix}
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture()
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'herpscore.db'}"
    upgrade(url)
    yield url
    dispose_engines()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Run the test on both databases."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture()
def photos_root(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    return root


@pytest.fixture()
def make_settings(tmp_path: Path, photos_root: Path) -> Callable[..., Settings]:
    """Settings for a test: its own data dir, the photos root allowed, overrides applied."""

    def build(db_url: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "database_url": db_url,
            "allowed_roots": [photos_root],
            "broker_url": "memory://",
            # Rate-limit counts in a shared Redis must not leak between test runs.
            "rate_limit_key_prefix": RATE_LIMIT_PREFIX,
        }
        values.update(overrides)
        return Settings(**values)

    return build
