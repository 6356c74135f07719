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
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from retraining_pipelines.settings import with_installed_driver

#: One engine per (url, schema) per process: a forked worker must not reuse its parent's sockets.
_ENGINES: dict[tuple[str, str, int], sa.Engine] = {}


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
    engine = sa.create_engine(url, poolclass=NullPool, connect_args={"timeout": 60})

    @sa.event.listens_for(engine, "connect")
    def _autocommit_wal(dbapi_connection, _record) -> None:
        # Autocommit at the driver, so `write()` decides when a transaction starts and how
        # (BEGIN IMMEDIATE), instead of pysqlite's deferred BEGIN before the first write.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=FULL")

    return engine


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

