"""A SQLite writer waits for the write lock in short steps, then gets it or gives up clearly."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from service import db


@pytest.fixture()
def url(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "locks.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.close()
    yield f"sqlite:///{path}"
    db.dispose_engines()


def hold_write_lock(url: str) -> sqlite3.Connection:
    """Another process's writer: a connection in BEGIN IMMEDIATE."""
    conn = sqlite3.connect(
        url.removeprefix("sqlite:///"), isolation_level=None, timeout=0, check_same_thread=False
    )
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t VALUES (1)")
    return conn


def test_a_writer_waits_for_the_lock_and_then_writes(url: str) -> None:
    holder = hold_write_lock(url)
    released = threading.Timer(0.3, holder.execute, ["COMMIT"])
    released.start()
    try:
        with db.session_scope(url) as session:
            session.execute(text("INSERT INTO t VALUES (2)"))
    finally:
        released.join()
    with db.read_scope(url) as session:
        assert sorted(session.scalars(text("SELECT x FROM t"))) == [1, 2]


def test_a_writer_gives_up_with_the_database_error_after_its_timeout(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db.begin_writing, "__defaults__", (0.2,))
    holder = hold_write_lock(url)
    try:
        with pytest.raises(OperationalError, match="locked"), db.session_scope(url) as session:
            session.execute(text("INSERT INTO t VALUES (2)"))
    finally:
        holder.execute("ROLLBACK")
    with db.session_scope(url) as session:  # the connection is still usable afterwards
        session.execute(text("INSERT INTO t VALUES (3)"))
    with db.read_scope(url) as session:
        assert list(session.scalars(text("SELECT x FROM t"))) == [3]


def test_other_statements_keep_the_busy_timeout(url: str) -> None:
    holder = hold_write_lock(url)
    holder.execute("COMMIT")
    with db.session_scope(url) as session:
        timeout = session.scalar(text("PRAGMA busy_timeout"))
    assert timeout == db.BUSY_TIMEOUT_MS


def test_readers_never_wait_for_a_writer(url: str) -> None:
    holder = hold_write_lock(url)
    try:
        with db.read_scope(url) as session:
            assert list(session.scalars(text("SELECT x FROM t"))) == []
    finally:
        holder.execute("ROLLBACK")
