"""The Dagster instance's storage for the embedded default: Dagster's SQLite files, written faster.

Dagster's `SqliteEventLogStorage` builds a new SQLAlchemy engine and opens a new SQLite connection
for every statement batch, and a retrain stores ~67 events, each written to the run's own database
and most mirrored to the index database: ~250 engines and connections per run. Profiled on this
2-core machine that was ~0.5 s of a warm ~1.8 s retrain whose bare scikit-learn work takes 0.7 s
(issue 11; `benchmarks/bench_many_jobs.py` measures both storages in one run).

`PooledSqliteEventLogStorage` keeps one engine per database file instead, its connection pooled,
and changes nothing else: same files, same schema, same transactions, same lock, so the web UI, the
daemon and Dagster's own tools read and write them as before, and an existing `dagster_home/` is
used as it is. Why this is safe:

- An idle pooled connection holds no lock: SQLAlchemy rolls back on return, and WAL mode (Dagster
  sets it on every database it creates) lets other processes read and write meanwhile.
- A run's database is only written while the run lives, so at most `RUN_SHARDS_KEPT` of them keep an
  engine; the least recently used is closed (a web server that reads a thousand runs does not keep a
  thousand files open). The index database is always kept.
- A forked child never uses its parent's connections (SQLite forbids it): after a fork the child drops
  them unclosed, as SQLAlchemy advises, and connects anew.
- `wipe` closes the cached connections before Dagster deletes the run files, so no connection writes
  into a deleted file.

A new run's database is also made faster: Dagster creates its schema and stamps its Alembic
revision (~0.09 s of every run, profiled), the same for every run of a Dagster version. The first
run does exactly that into a template file (Dagster's own `_initdb`); each later run's database is a
copy of it, put in place by a hard link, which fails if the file already exists: a run database
another process created first is never overwritten, and is checked as Dagster checks it. The
template's name carries the Dagster and SQLAlchemy versions, so an upgrade builds a new one; it does
not end in `.db`, so Dagster never takes it for a run (`get_all_run_ids`, `wipe`).

`PooledSqliteRunStorage` does the same for the run storage (`runs.db`): Dagster's builds a new
engine and connection for each of the ~40 statements a retrain makes there (creating the run, its
status changes, tags, the checks' and the UI's lookups), ~0.3 ms each against 0.05 ms pooled
(issue 11, seventh pass). Its connections follow the event log's rules: idle ones hold no lock, a
forked child drops its parent's unclosed, and a pool never makes a caller wait (overflow is
unlimited, as Dagster's engine-per-statement was). The same files, schema and transactions.

Dagster also asks the index database whether a table exists before every asset-check event and
every tag write of a materialization (`has_table`, 22 times a retrain), each time through a new
engine and connection (~1 ms). The pooled event log remembers the tables it found: a table Dagster's
schema created stays until the files are wiped, the same assumption Dagster makes when it checks a
database's schema only on its first use (`_initialized_dbs`). A missing table is asked again.

`RetrainingSqliteStorage` is Dagster's `storage: sqlite:` with these two; `dagster_home/
dagster.yaml` selects it. Schedule storage stays Dagster's own: a retrain does not touch it.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from dagster.version import __version__ as DAGSTER_VERSION
from sqlalchemy import __version__ as SQLALCHEMY_VERSION
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

# Run databases that keep an engine. A retrain writes its own and the index; the daemon and the web
# server watch a few live runs at once. More would only hold file handles.
RUN_SHARDS_KEPT = 8
SQLITE_FILE_MODE = 0o644  # SQLite's default for the files it creates (SQLITE_DEFAULT_FILE_PERMISSIONS)

#: Every pooled storage of this process: a forked child makes each forget its parent's connections.
_LIVE: weakref.WeakSet[PooledSqliteEventLogStorage | PooledSqliteRunStorage] = weakref.WeakSet()


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's run-sharded SQLite event log, one pooled engine per database file (module docstring)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()  # guarded by Dagster's `_db_lock`
        self._tables: set[str] = set()  # found in the index database (module docstring)
        super().__init__(base_dir, inst_data=inst_data)
        _LIVE.add(self)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: dict
    ) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        """Dagster's `_connect` (same lock, same first-use schema check, one transaction), engine kept."""
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                if shard == INDEX_SHARD_NAME or not self._copy_template_to(shard):
                    self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _engine(self, shard: str) -> Engine:
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        engine = create_engine(
            self.conn_string_for_shard(shard),
            pool_size=1,  # every statement runs under `_db_lock`: one connection at a time
            max_overflow=1,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
        )
        self._engines[shard] = engine
        runs = [name for name in self._engines if name != INDEX_SHARD_NAME]
        for name in runs[: max(0, len(runs) - RUN_SHARDS_KEPT)]:
            self._engines.pop(name).dispose()
        return engine

    def has_table(self, table_name: str) -> bool:
        """Dagster's answer, remembered once a table is there (module docstring)."""
        if table_name in self._tables:
            return True
        if not super().has_table(table_name):
            return False
        self._tables.add(table_name)
        return True

    def _copy_template_to(self, shard: str) -> bool:
        """Creates a new run's database as a copy of the template; False if the file exists already
        (or cannot be linked), and then Dagster's own check applies."""
        target = self.path_for_shard(shard)
        if os.path.exists(target):
            return False
        copy = self._temp_file(".copy")
        try:
            shutil.copyfile(self._template(), copy)
            os.link(copy, target)  # atomic, and never over a file another process created meanwhile
            return True
        except OSError:
            return False
        finally:
            os.unlink(copy)

    def _template(self) -> str:
        """An empty run database exactly as Dagster creates it, built once per Dagster version."""
        path = os.path.join(self._base_dir, f".run-template-dagster-{DAGSTER_VERSION}-sqlalchemy-{SQLALCHEMY_VERSION}")
        if not os.path.exists(path):
            building = self._temp_file(".template")
            engine = create_engine(f"sqlite:///{building}", poolclass=NullPool)
            try:
                self._initdb(engine)
                engine.dispose()  # its only connection closes: SQLite checkpoints the WAL into the file
                os.replace(building, path)  # whole or absent, whoever builds it at the same time
            except BaseException:
                engine.dispose()
                os.unlink(building)
                raise
        return path

    def _temp_file(self, suffix: str) -> str:
        """A new empty file with the permissions SQLite gives the databases it creates (0644 less the
        umask; `tempfile.mkstemp` would make them 0600, unreadable to a web server run as another user)."""
        path = os.path.join(self._base_dir, f".run-template-{uuid.uuid4().hex}{suffix}")
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, SQLITE_FILE_MODE))
        return path

    def _drop_engines(self, close: bool = True) -> None:
        """Forgets every cached engine (they reopen on next use); the caller holds `_db_lock`.

        `close=False` in a forked child: the connections are the parent's to close, not the child's.
        """
        engines, self._engines = list(self._engines.values()), OrderedDict()
        for engine in engines:
            engine.dispose(close=close)

    def _after_fork(self) -> None:
        """In a forked child: the parent's connections are not ours, nor is a lock a parent thread held."""
        self._drop_engines(close=False)
        self._db_lock = threading.Lock()

    def wipe(self) -> None:
        with self._db_lock:
            self._drop_engines()
            self._tables = set()
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        with self._db_lock:
            self._drop_engines()


class PooledSqliteRunStorage(SqliteRunStorage):
    """Dagster's SQLite run storage, its engine kept (module docstring)."""

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(conn_string, inst_data)
        self._pooled: Engine | None = None
        self._pool_lock = threading.Lock()
        _LIVE.add(self)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """Dagster's `connect` (one connection, one transaction), from a kept engine."""
        with self._engine().connect() as conn, conn.begin():
            yield conn

    def _engine(self) -> Engine:
        with self._pool_lock:
            if self._pooled is None:
                # two kept idle; any number more while busy, closed on return (never a wait for the pool)
                self._pooled = create_engine(self._conn_string, pool_size=2, max_overflow=-1)
            return self._pooled

    def _drop_engine(self, close: bool = True) -> None:
        """Forgets the engine (it reopens on next use); `close=False` in a forked child."""
        with self._pool_lock:
            engine, self._pooled = self._pooled, None
        if engine is not None:
            engine.dispose(close=close)

    def _after_fork(self) -> None:
        """In a forked child: as the event log's."""
        self._pool_lock = threading.Lock()
        self._drop_engine(close=False)

    def dispose(self) -> None:
        super().dispose()
        self._drop_engine()


def _after_fork_in_child() -> None:
    for storage in list(_LIVE):
        storage._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class RetrainingSqliteStorage(DagsterSqliteStorage):
    """Dagster's `storage: sqlite:` (same directories under `base_dir`) with the pooled event log and runs."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        # Dagster's own layout under `base_dir` (its functions), so the files are the ones `storage: sqlite:` uses
        self.base_dir = base_dir
        self._run_storage = PooledSqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: dict) -> RetrainingSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)
