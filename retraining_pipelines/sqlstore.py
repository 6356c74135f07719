"""The database under the service's own small stores (the registry index, the job store).

Both need the same three things, on SQLite (the embedded default: one file, no server) and on
PostgreSQL (several machines sharing one index):

* a URL: a store's own SQLite file by default, `RETRAINING_DATABASE_URL` when scaled out;
* a namespace: on PostgreSQL each store keeps its tables in a schema of its own (`search_path`),
  so they share one database with Dagster's tables and the plant data without a name clash;
* write transactions that serialize writers from their first statement, which is what makes a
  version number or a job id allocated by `SELECT max(...) + 1` safe across processes and hosts:
  `BEGIN IMMEDIATE` on SQLite, a table lock (`SHARE ROW EXCLUSIVE`, which readers never wait
  for) on PostgreSQL.
"""

from __future__ import annotations

import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from retraining_pipelines.settings import with_installed_driver

#: One engine per (url, schema) per process: a forked worker must not reuse its parent's sockets.
_ENGINES: dict[tuple[str, str, int], sa.Engine] = {}

#: How long a SQLite connection waits for another process's lock (the driver's busy timeout).
SQLITE_BUSY_SECONDS = 60


def is_sqlite(engine: sa.Engine) -> bool:
    return engine.dialect.name == "sqlite"


def get_engine(url: str, schema: str) -> sa.Engine:
    """The engine for `url`, whose connections see `schema`'s tables first (PostgreSQL)."""
    url = with_installed_driver(url)
    key = (url, schema, os.getpid())
    if key not in _ENGINES:
        _ENGINES[key] = _sqlite_engine(url) if url.startswith("sqlite") else _server_engine(url, schema)
    return _ENGINES[key]


def _sqlite_engine(url: str) -> sa.Engine:
    # No pool: every call opens its own connection, so a file another process replaced or removed
    # (a test's temp dir, a restored backup) is never read through a stale handle.
    engine = sa.create_engine(url, poolclass=NullPool, connect_args={"timeout": SQLITE_BUSY_SECONDS})

    @sa.event.listens_for(engine, "connect")
    def _autocommit_wal(dbapi_connection, _record) -> None:
        # Autocommit at the driver, so `write()` decides when a transaction starts and how
        # (BEGIN IMMEDIATE), instead of pysqlite's deferred BEGIN before the first write.
        dbapi_connection.isolation_level = None
        switch_to_wal(dbapi_connection)
        dbapi_connection.execute("PRAGMA synchronous=FULL")

    return engine


def switch_to_wal(dbapi_connection: sqlite3.Connection, timeout: float = SQLITE_BUSY_SECONDS) -> None:
    """`PRAGMA journal_mode=WAL`, waiting for other processes as long as any other statement would.

    Switching a file's journal mode needs the lock another connection may hold while it creates
    the same new file's tables; SQLite then answers "database is locked" at once instead of waiting
    its busy timeout (each holds what the other needs). Four retrains started together on a fresh
    registry failed so, one of them with a StorageError (CI, 2026-11-28). Waiting until the other
    transaction ends, as the busy timeout would, is all it takes.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _server_engine(url: str, schema: str) -> sa.Engine:
    return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4,
                            connect_args={"options": f"-csearch_path={schema}"})


def create_schema(engine: sa.Engine, schema: str | None, ddl: str | Callable[[sa.Connection], None]) -> None:
    """Create a store's tables once, however many processes start at once.

    `ddl` is idempotent SQL (statements separated by `;;`, as a trigger body has its own `;`) or a
    function of the connection (SQLAlchemy metadata). On PostgreSQL, concurrent `CREATE ... IF NOT
    EXISTS` can still collide in the catalog, so creation holds a transaction-level advisory lock,
    and `schema` (when given) is created first.
    """
    with engine.connect() as conn:
        if not is_sqlite(engine):
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(f"{schema}".encode())})
            if schema:
                conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        if callable(ddl):
            ddl(conn)
        else:
            for statement in filter(str.strip, ddl.split(";;")):
                conn.exec_driver_sql(statement)
        conn.commit()


@contextmanager
def write(engine: sa.Engine, lock_table: str) -> Iterator[sa.Connection]:
    """A write transaction that holds the store's write lock from its first statement."""
    with engine.connect() as conn:
        if is_sqlite(engine):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql(f"LOCK TABLE {lock_table} IN SHARE ROW EXCLUSIVE MODE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

