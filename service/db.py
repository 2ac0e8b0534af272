"""Engine and session factory; the caller owns the transaction (`with session_scope(...)`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    ColumnElement,
    Dialect,
    Engine,
    Select,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import QueryableAttribute, Session, sessionmaker
from sqlalchemy.sql.schema import CallableColumnDefault, ScalarElementColumnDefault

from service.errors import NotFound

_engines: dict[tuple[str, bool], Engine] = {}
_lock = threading.Lock()
# The web's per-job queries are prepared once and reused for jobs of every size: after a
# few small jobs PostgreSQL switches to a generic plan that is 11x slower on a 600k job.
CUSTOM_PLANS = "-c plan_cache_mode=force_custom_plan"


def get_engine(url: str, *, custom_plans: bool = False) -> Engine:
    """One engine per URL (and plan mode) per process, created lazily (after a worker forks).

    `custom_plans` (the web's connections): PostgreSQL plans every statement for its own
    parameters instead of falling back to a generic plan for prepared statements.
    """
    key = (url, custom_plans and not url.startswith("sqlite"))
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _create(url, key[1])
        return engine


WRITE_LOCK_TIMEOUT = 60.0  # seconds a SQLite writer waits for the write lock
WRITE_LOCK_STEP = 0.002  # the longest sleep between two tries for it
BUSY_TIMEOUT_MS = int(WRITE_LOCK_TIMEOUT * 1000)  # every other statement's wait for a lock


def _create(url: str, custom_plans: bool = False) -> Engine:
    if not url.startswith("sqlite"):
        connect_args = {"options": CUSTOM_PLANS} if custom_plans else {}
        return create_engine(
            url, pool_pre_ping=True, pool_size=5, max_overflow=10, connect_args=connect_args
        )
    engine = create_engine(
        url, connect_args={"timeout": WRITE_LOCK_TIMEOUT, "check_same_thread": False}
    )
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
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # Take the write lock up front: concurrent writers then wait instead of failing when a
    # read transaction tries to upgrade, and claims are serialised. Read-only scopes begin
    # deferred: under WAL they never wait for a writer.
    if conn.get_execution_options().get("herpscore_readonly", False):
        conn.exec_driver_sql("BEGIN")
    else:
        begin_writing(conn)


def begin_writing(conn: Any, timeout: float = WRITE_LOCK_TIMEOUT) -> None:
    """BEGIN IMMEDIATE, waiting for the write lock in steps of at most WRITE_LOCK_STEP.

    SQLite's own busy handler sleeps in growing steps up to 100 ms, so a writer that found
    the lock taken got it 5-20 ms after its release (benchmarks/embedded_waits.py): idle
    cores in every chunk that collides with another. Here the busy timeout is off for the
    BEGIN alone and the wait is a loop of short sleeps; every other statement keeps it.
    """
    deadline = time.monotonic() + timeout
    delay = 0.0002
    raw = conn.connection.dbapi_connection
    raw.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                if "locked" not in str(exc.orig) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, WRITE_LOCK_STEP)
    finally:
        raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def session_factory(url: str, *, custom_plans: bool = False) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url, custom_plans=custom_plans), expire_on_commit=False)


@contextmanager
def session_scope(url: str, *, custom_plans: bool = False) -> Iterator[Session]:
    """A session in one transaction: commit on success, roll back on error."""
    with session_factory(url, custom_plans=custom_plans).begin() as session:
        yield session


@contextmanager
def read_scope(url: str, *, custom_plans: bool = False) -> Iterator[Session]:
    """A session for reads only (progress polling, listings): never takes SQLite's write lock."""
    engine = get_engine(url, custom_plans=custom_plans).execution_options(herpscore_readonly=True)
    with sessionmaker(bind=engine, expire_on_commit=False).begin() as session:
        yield session


def dispose_engines() -> None:
    """Drop every pooled connection (after a fork, or when a test ends)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


Row = TypeVar("Row")


def get_or_not_found(
    session: Session, model: type[Row], ident: int, what: str, **get_options: Any
) -> Row:
    """The row with this primary key, or NotFound ("<what> <ident> does not exist")."""
    row = session.get(model, ident, **get_options)
    if row is None:
        raise NotFound(f"{what} {ident} does not exist")
    return row


def newest_first(
    session: Session, query: Select[Row], id_column: Any, limit: int, offset: int
) -> tuple[list[Row], int]:
    """One page of the query's rows, newest (highest id) first, and the count of them all."""
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(id_column.desc()).limit(limit).offset(offset))
    return list(rows), total


def in_values(
    session: Session, column: QueryableAttribute[Any], values: Iterable[Any]
) -> ColumnElement[bool]:
    """`column IN (values)`; on PostgreSQL `column = ANY(:values)`, with one array parameter.

    An array keeps one statement text for every count of values, so psycopg parses it once
    (docs/performance.md). SQLite has no arrays, and no round trips to save.
    """
    values = list(values)
    if session.get_bind().dialect.name == "postgresql":
        array = bindparam(None, values, type_=ARRAY(column.expression.type))
        return column == any_(array)
    return column.in_(values)


def insert_ignoring_conflicts(
    session: Session,
    model: Any,
    rows: list[dict[str, Any]],
    conflict_columns: list[str],
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """INSERT ... ON CONFLICT DO NOTHING on PostgreSQL and SQLite (idempotent writes).

    With `returning` (attribute names), returns those values of the rows it inserted,
    in no particular order; rows skipped as conflicts return nothing.
    """
    if not rows:
        return []
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql":
        return _insert_recordset(session, model, rows, conflict_columns, dialect, returning)
    if dialect.name != "sqlite":
        raise NotImplementedError(f"no idempotent insert for {dialect.name}")
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    stmt = sqlite_insert(model).on_conflict_do_nothing(index_elements=conflict_columns)
    if not returning:
        session.execute(stmt, rows)  # an executemany: SQLite has no round trips to save
        return []
    with_returning = stmt.returning(*(getattr(model, key) for key in returning))
    return [tuple(row) for row in session.execute(with_returning, rows)]


def _insert_recordset(
    session: Session,
    model: Any,
    rows: list[dict[str, Any]],
    conflict_columns: list[str],
    dialect: Dialect,
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """PostgreSQL: one INSERT ... SELECT FROM json_populate_recordset(rows as one JSON text).

    One statement, one round trip and one parameter, cheaper in client CPU than an
    executemany or one array per column (docs/performance.md). Rows are keyed by mapped
    attribute; Python-side defaults fill the columns they leave out (a callable once per
    row, as an executemany calls it), and every value goes through its type's bind processor.
    """
    mapper = sa_inspect(model)
    given = set(rows[0])
    defaults: dict[str, Callable[[Any], Any]] = {}  # attribute -> the default, given a row
    for attr in mapper.column_attrs:
        column = attr.columns[0]
        default = column.default
        if attr.key in given or default is None or column.primary_key:
            continue
        if isinstance(default, ScalarElementColumnDefault):
            defaults[attr.key] = partial(_constant_of_row, default.arg)
        elif isinstance(default, CallableColumnDefault):
            defaults[attr.key] = default.arg  # takes a context
    names, columns = [], []
    for key in [*rows[0], *defaults]:
        column = mapper.columns[key]
        if key in defaults:
            make = defaults[key]
            values = [make(_RowContext(mapper, row)) for row in rows]
        else:
            values = [row[key] for row in rows]
        if not isinstance(column.type, JSON) and (process := column.type.bind_processor(dialect)):
            values = [process(value) for value in values]
        names.append(column.name)
        columns.append(values)
    document = json.dumps(
        [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)],
        default=_json_scalar,
        allow_nan=False,  # PostgreSQL's JSON has no NaN: fail here, clearly
    )
    quote = dialect.identifier_preparer.quote
    table, cols = quote(mapper.local_table.name), ", ".join(map(quote, names))
    statement = (
        f"INSERT INTO {table} ({cols}) SELECT {cols} "
        f"FROM json_populate_recordset(NULL::{table}, CAST(:rows AS json)) "
        f"ON CONFLICT ({', '.join(map(quote, conflict_columns))}) DO NOTHING"
    )
    if not returning:
        session.execute(text(statement), {"rows": document})
        return []
    statement += " RETURNING " + ", ".join(quote(mapper.columns[key].name) for key in returning)
    return [tuple(row) for row in session.execute(text(statement), {"rows": document})]


def _constant_of_row(value: Any, _context: Any) -> Any:
    return value


class _RowContext:
    """What a context-sensitive column default reads: the row's other values, by column."""

    def __init__(self, mapper: Any, row: dict[str, Any]) -> None:
        self._parameters = {mapper.columns[key].name: value for key, value in row.items()}

    def get_current_parameters(self, isolate_multiinsert_groups: bool = True) -> dict[str, Any]:
        return self._parameters


def _json_scalar(value: Any) -> Any:
    """What json.dumps cannot write itself: timestamps (ISO 8601, with their offset)."""
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in a bulk insert")
