"""Engine and session factory; the caller owns the transaction (`with session_scope(...)`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import JSON, Dialect, Engine, Table, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.schema import CallableColumnDefault, ScalarElementColumnDefault

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def get_engine(url: str) -> Engine:
    """One engine per URL per process, created lazily (so after a worker forks)."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _create(url)
        return engine


def _create(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", _sqlite_begin_immediate)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the web process read while a worker writes; the busy timeout waits for locks.
    dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event below issues BEGIN itself
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # Take the write lock up front: concurrent writers then wait (busy_timeout) instead of
    # failing when a read transaction tries to upgrade, and claims are serialised. Read-only
    # scopes begin deferred: under WAL they never wait for a writer.
    readonly = conn.get_execution_options().get("herpscore_readonly", False)
    conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session in one transaction: commit on success, roll back on error."""
    with session_factory(url).begin() as session:
        yield session


@contextmanager
def read_scope(url: str) -> Iterator[Session]:
    """A session for reads only (progress polling, listings): never takes SQLite's write lock."""
    engine = get_engine(url).execution_options(herpscore_readonly=True)
    with sessionmaker(bind=engine, expire_on_commit=False).begin() as session:
        yield session


def dispose_engines() -> None:
    """Drop every pooled connection (after a fork, or when a test ends)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def insert_ignoring_conflicts(
    session: Session, model: Any, rows: list[dict[str, Any]], conflict_columns: list[str]
) -> None:
    """INSERT ... ON CONFLICT DO NOTHING on PostgreSQL and SQLite (idempotent writes)."""
    if not rows:
        return
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql":
        _insert_unnest(session, model.__table__, rows, conflict_columns, dialect)
        return
    if dialect.name != "sqlite":
        raise NotImplementedError(f"no idempotent insert for {dialect.name}")
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    stmt = sqlite_insert(model).on_conflict_do_nothing(index_elements=conflict_columns)
    session.execute(stmt, rows)  # an executemany: SQLite has no round trips to save


def _insert_unnest(
    session: Session,
    table: Table,
    rows: list[dict[str, Any]],
    conflict_columns: list[str],
    dialect: Dialect,
) -> None:
    """PostgreSQL: one INSERT ... SELECT FROM unnest(one array per column) for all rows.

    One statement and one round trip, with each column sent as one array. Measured over
    the four bulk inserts a photo gets (image, job image, prediction, review item; 2000
    rows each), it cost 0.06 ms of client CPU per photo against 0.15 for an executemany,
    where SQLAlchemy processes and psycopg pipelines every row one by one.
    Column types and Python-side defaults (for columns the rows leave out) come from the
    table, and each value goes through its type's bind processor, as an executemany does.
    """
    names = list(rows[0])
    for column in table.columns:
        default = column.default
        if column.name in names or default is None or column.primary_key:
            continue
        if isinstance(default, ScalarElementColumnDefault):
            value = default.arg
        elif isinstance(default, CallableColumnDefault):
            value = default.arg(None)  # type: ignore[arg-type]  # wrapped to take a context
        else:
            continue
        names.append(column.name)
        rows = [{**row, column.name: value} for row in rows]
    params: dict[str, list[Any]] = {}
    casts = []
    for i, name in enumerate(names):
        column = table.c[name]
        values = [row[name] for row in rows]
        if isinstance(column.type, JSON):  # psycopg would see nested lists as arrays
            values = [None if value is None else json.dumps(value) for value in values]
        elif (process := column.type.bind_processor(dialect)) is not None:
            values = [process(value) for value in values]
        params[f"c{i}"] = values
        casts.append(f"CAST(:c{i} AS {column.type.compile(dialect=dialect)}[])")
    quote = dialect.identifier_preparer.quote
    statement = (
        f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, names))}) "
        f"SELECT * FROM unnest({', '.join(casts)}) "
        f"ON CONFLICT ({', '.join(map(quote, conflict_columns))}) DO NOTHING"
    )
    session.execute(text(statement), params)
