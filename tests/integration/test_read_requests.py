"""Read-only requests answer while another process holds SQLite's write lock (a worker
writing a chunk): they go through the read scope, which never asks for that lock."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from service.db import dispose_engines, session_scope
from service.models import Image, Role
from service.settings import Settings
from tests.integration.test_admin_ui import log_in_session, make_user, score_folder
from tests.support.photos import make_photo_folder


@pytest.fixture()
def api_db_url(sqlite_template: Path, tmp_path: Path) -> Iterator[str]:
    """SQLite only: its write lock is what these tests are about."""
    path = tmp_path / "herpscore.db"
    shutil.copyfile(sqlite_template, path)
    yield f"sqlite:///{path}"
    dispose_engines()


@pytest.fixture()
def write_lock(api_settings: Settings) -> Callable[[], sqlite3.Connection]:
    """Take SQLite's write lock from another connection, as a worker's transaction does."""
    held: list[sqlite3.Connection] = []

    def take() -> sqlite3.Connection:
        path = api_settings.db_url.removeprefix("sqlite:///")
        conn = sqlite3.connect(path, isolation_level=None, timeout=0)
        conn.execute("BEGIN IMMEDIATE")
        held.append(conn)
        return conn

    yield take  # type: ignore[misc]
    for conn in held:
        conn.rollback()
        conn.close()


def test_ui_reads_answer_while_a_writer_holds_the_lock(
    api_app: Flask,
    api_settings: Settings,
    active_model: int,
    photos_root: Path,
    write_lock: Callable[[], sqlite3.Connection],
) -> None:
    make_photo_folder(photos_root / "site", count=2)
    job_id = score_folder(api_settings, str(photos_root / "site"))
    with session_scope(api_settings.db_url) as session:
        image_id = session.scalars(select(Image.id)).first()
    client = api_app.test_client()
    log_in_session(client, make_user(api_settings, Role.VIEWER))
    client.get("/")  # warm: the first request of an app may run one-off queries

    write_lock()
    # Every request below also loads the logged-in user (Flask-Login's user loader).
    for url in ("/", f"/jobs/{job_id}/progress.json", f"/images/{image_id}/thumbnail.jpg"):
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        response.close()


def test_api_reads_answer_while_a_writer_holds_the_lock(
    api_app: Flask,
    auth: Callable[[Role], dict[str, str]],
    write_lock: Callable[[], sqlite3.Connection],
) -> None:
    client = api_app.test_client()
    viewer = auth(Role.VIEWER)
    assert client.get("/api/v1/review/stats", headers=viewer).status_code == 200  # notes the use

    write_lock()
    assert client.get("/api/v1/health").get_json() == {"status": "ok", "database": "ok"}
    stats = client.get("/api/v1/review/stats", headers=viewer)
    assert stats.status_code == 200 and stats.get_json()["pending"] == 0
