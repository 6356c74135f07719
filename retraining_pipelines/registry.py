"""The model registry: immutable, checksummed model versions and the one active version per type.

Layout: `<root>/<model_type>/<version>/model.joblib` + `metadata.json`, and `<root>/registry.sqlite`,
the index and the source of truth. Guarantees:

The index is SQLite in the directory by default; with `RETRAINING_DATABASE_URL` it is a schema
(`model_registry`) in that PostgreSQL database, so several machines share one registry (the files
then live in a directory they all mount). The guarantees hold on both:

* Crash safety: a version is written to `<root>/.staging/`, fsynced, then renamed into place and
  recorded in one transaction. A directory without an index row is invisible and is
  cleared when its version number is next allocated.
* Version numbers are allocated inside a transaction that holds the index's write lock
  (`sqlstore.write`), so two retrains (threads, processes or hosts) never get the same number.
* Exactly one ACTIVE version per model type at every instant: a partial unique index forbids
  two, and every swap archives the old and activates the new in one transaction.
* Loading reads the artifact's bytes once, checks their SHA-256 against the index, and unpickles
  those same bytes: a changed or truncated file is refused, never executed.
* A version the gate predicts with may come from memory (`load_for_prediction`): the object this
  process registered or last loaded, kept only while the file still verifies and only up to
  `WARM_MODEL_MAX_BYTES`, never handed to a caller who could change it (`load_model` unpickles).
* The audit trail is append-only (triggers in the database reject UPDATE and DELETE).
* Only a version that was served before (promoted by the gate) can be made ACTIVE again by
  `rollback` or `set_model_status`: a never-gated candidate, a rejected or an abandoned version
  never reaches users by a side door.
* Each version records the period its training rows covered (`train_start_ts`, `train_end_ts`),
  so the promotion gate can judge the active version only on rows it never learned from.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import platform
import shutil
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import joblib
import numpy as np
import pandas as pd
import sklearn
import sqlalchemy as sa
from joblib.numpy_pickle import NumpyUnpickler
from sklearn.exceptions import InconsistentVersionWarning
from sklearn.tree._tree import Tree

from retraining_pipelines import sqlstore, validation
from retraining_pipelines.catalog import get_spec
from retraining_pipelines.errors import InvalidFieldError, ModelIntegrityError, RegistryError, StorageError
from retraining_pipelines.settings import shared_database_url
from retraining_pipelines.versioning import BumpType, bump_for_retrain, bump_version, parse_version

ARTIFACT = "model.joblib"
METADATA = "metadata.json"
REFERENCE = "reference.csv"  # a sample of the training inputs: data, never unpickled
INDEX = "registry.sqlite"
#: The PostgreSQL schema that holds the index when it is shared.
INDEX_SCHEMA = "model_registry"
STAGING = ".staging"
TRIGGERS = ("manual", "scheduled", "drift", "backfill")
TRIGGER_TAG = "retraining/trigger"
DEFAULT_KEEP_ARCHIVED = 10
_STALE_STAGING_S = 3600
#: A version this size or smaller stays unpickled in memory for the gate (`load_for_prediction`), at
#: most two per model type and registry (`_WarmModels`): unpickling a hobby grower's 2.4 MB forest
#: took 33 ms of a warm retrain's ~0.4 s overhead (issue 11). A larger one is loaded each time: its
#: memory is worth more than its load time, which its fit dwarfs.
WARM_MODEL_MAX_BYTES = 16 * 2**20


class _WarmModels:
    """Per model type, the active version and the newest candidate this process registered, unpickled:
    a retrain registers its candidate, then its gate predicts with the active version - the previous
    candidate when that was promoted. At most two per model type (and registry); a version loaded
    because it was missing takes the place of the one that is neither.

    An entry names its version and the sha256 it was registered with, so a version changed or restored
    elsewhere is a miss. Only the pipeline's own candidate goes in at registration
    (`register_model(keep_warm=True)`: nothing else holds that object after its run), and what
    `load_for_prediction` hands out is only predicted with. Thread-safe.
    """

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], dict[str, tuple[str, Any]]] = {}
        self._newest: dict[tuple[str, str], str] = {}  # the newest candidate registered warm
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        """A forked child may not inherit a lock another thread of its parent held."""
        self._lock = threading.Lock()

    def registered(self, index: str, record: ModelVersion, model: Any, active: str | None) -> None:
        """A new candidate: kept beside the active version's entry, the rest dropped."""
        with self._lock:
            self._newest[(index, record.model_type)] = record.version
            self._keep(index, record, model, also=active)

    def loaded(self, index: str, record: ModelVersion, model: Any) -> None:
        """A version unpickled for a gate: kept beside the newest candidate, the rest dropped."""
        with self._lock:
            self._keep(index, record, model, also=self._newest.get((index, record.model_type)))

    def _keep(self, index: str, record: ModelVersion, model: Any, also: str | None) -> None:
        key = (index, record.model_type)
        kept = {version: entry for version, entry in self._items.get(key, {}).items() if version == also}
        if record.size_bytes <= WARM_MODEL_MAX_BYTES:
            kept[record.version] = (record.sha256, model)
        self._items[key] = kept

    def get(self, index: str, record: ModelVersion) -> Any | None:
        with self._lock:
            sha256, model = self._items.get((index, record.model_type), {}).get(record.version, (None, None))
        return model if sha256 == record.sha256 else None


_WARM = _WarmModels()


class ModelStatus(StrEnum):
    """Lifecycle of a version. Only ACTIVE is served; PURGED keeps the record, not the file."""

    CANDIDATE = "candidate"
    ACTIVE = "active"
    ARCHIVED = "archived"
    REJECTED = "rejected"
    ABANDONED = "abandoned"  # its run failed or died before the gate decided; never served
    PURGED = "purged"


#: Audit events that put a version in front of users; a version with none was never served.
SERVING_EVENTS = ("promoted", "activated", "rolled_back")
#: A candidate whose run is long gone (no record of it in any instance we can see) is abandoned
#: after this long; a live run never takes that long on the hardware this targets.
ORPHAN_CANDIDATE_AGE_S = 24 * 3600


@dataclass(frozen=True)
class ModelMetadata:
    """What the caller knows about a model when registering it (the spec's `ModelMetadata`)."""

    model_type: str
    feature_names: list[str]
    training_samples: int
    training_duration: float
    performance_metrics: dict[str, float] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    run_id: str | None = None
    trigger: str = "manual"
    schema_fingerprint: str | None = None  # default: the catalog's current one
    train_start_ts: int | None = None  # first training row (epoch s): what the model has seen
    train_end_ts: int | None = None  # last training row; rows after it are fair to judge it on
    seen_until_ts: int | None = None  # newest row it learned from or was validated on (its hold-out's end)
    #: How its gate splits the rows (`training.time_split`): a drift retrain's hold-out is the newest
    #: fifth of the rows from this moment on (epoch s; None: of the whole window) ...
    recent_from_ts: int | None = None
    #: ... and it was fitted again on that hold-out once judged (`training.learn_holdout`): it has
    #: learned every row a gate in another run could judge it on.
    learned_holdout: bool = False
    #: The version the caller expects (the spec passes it). The registry allocates numbers itself;
    #: when another registration took this one first, registering refuses instead of renumbering.
    version: str | None = None

    def __post_init__(self) -> None:
        """Refuse what the index cannot hold faithfully, before anything is written."""
        get_spec(self.model_type)
        names = self.feature_names
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) and n for n in names):
            raise InvalidFieldError("feature_names", names, "a list of non-empty column names")
        validation.whole("training_samples", self.training_samples, 0, validation.MAX_ID)
        validation.number("training_duration", self.training_duration, 0.0, 1e9)
        metrics = self.performance_metrics
        if not isinstance(metrics, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for k, v in metrics.items()
        ):
            raise InvalidFieldError("performance_metrics", metrics, "a dict of metric name -> finite number")
        if not isinstance(self.hyperparameters, dict):
            raise InvalidFieldError("hyperparameters", self.hyperparameters, "a dict of parameter -> value")
        if not isinstance(self.learned_holdout, bool):
            raise InvalidFieldError("learned_holdout", self.learned_holdout, (True, False))
        for name in ("train_start_ts", "train_end_ts", "seen_until_ts", "recent_from_ts"):
            if getattr(self, name) is not None:
                validation.whole(name, getattr(self, name), 0, validation.MAX_ID)
        if self.version is not None:
            parse_version(self.version)
        if None not in (self.train_start_ts, self.train_end_ts) and self.train_start_ts > self.train_end_ts:
            raise InvalidFieldError("train_end_ts", self.train_end_ts, f">= train_start_ts ({self.train_start_ts})")
        if None not in (self.train_end_ts, self.seen_until_ts) and self.train_end_ts > self.seen_until_ts:
            raise InvalidFieldError("seen_until_ts", self.seen_until_ts, f">= train_end_ts ({self.train_end_ts})")


@dataclass(frozen=True)
class ModelVersion:
    """One registered version, as the index records it."""

    model_type: str
    version: str
    status: ModelStatus
    sha256: str
    size_bytes: int
    path: Path
    created_at: str
    metrics: dict[str, float]
    feature_names: list[str]
    training_samples: int
    training_duration: float
    hyperparameters: dict[str, Any]
    schema_fingerprint: str
    data_fingerprint: str
    python_version: str
    sklearn_version: str
    numpy_version: str
    run_id: str | None
    trigger: str
    train_start_ts: int | None = None
    train_end_ts: int | None = None
    seen_until_ts: int | None = None  # None: registered before it was recorded (`drift` estimates it)
    recent_from_ts: int | None = None  # see `ModelMetadata`; None also for versions registered before it
    learned_holdout: bool = False
    reference_sha256: str | None = None  # None: registered without a reference (or before checksums)
    metadata_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status.value
        out["path"] = str(self.path)
        return out


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: str
    model_type: str
    event: str
    from_version: str | None
    to_version: str | None
    reason: str
    trigger: str
    run_id: str | None


_COLUMNS = """
    model_type TEXT NOT NULL, version TEXT NOT NULL,
    major INTEGER NOT NULL, minor INTEGER NOT NULL, patch INTEGER NOT NULL,
    status TEXT NOT NULL, sha256 TEXT NOT NULL, size_bytes BIGINT NOT NULL, created_at TEXT NOT NULL,
    metrics TEXT NOT NULL, feature_names TEXT NOT NULL, training_samples BIGINT NOT NULL,
    training_duration DOUBLE PRECISION NOT NULL, hyperparameters TEXT NOT NULL, schema_fingerprint TEXT NOT NULL,
    data_fingerprint TEXT NOT NULL, python_version TEXT NOT NULL, sklearn_version TEXT NOT NULL,
    numpy_version TEXT NOT NULL, run_id TEXT, trigger TEXT NOT NULL,
    train_start_ts BIGINT, train_end_ts BIGINT, reference_sha256 TEXT, metadata_sha256 TEXT, seen_until_ts BIGINT,
    recent_from_ts BIGINT, learned_holdout INTEGER,
    PRIMARY KEY (model_type, version)
"""
_AUDIT_COLUMNS = """at TEXT NOT NULL, model_type TEXT NOT NULL,
    event TEXT NOT NULL, from_version TEXT, to_version TEXT, reason TEXT NOT NULL,
    trigger TEXT NOT NULL, run_id TEXT"""
_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS one_active_version ON versions (model_type) WHERE status = 'active';;
CREATE INDEX IF NOT EXISTS audit_by_model ON audit_log (model_type, id);;
CREATE INDEX IF NOT EXISTS versions_by_run ON versions (run_id);;
CREATE INDEX IF NOT EXISTS versions_by_status ON versions (model_type, status, major, minor, patch);;
"""
#: Columns added after the first release; an older index gets them (NULL: period unknown) on open.
_ADDED_COLUMNS = {"train_start_ts": "INTEGER", "train_end_ts": "INTEGER", "reference_sha256": "TEXT",
                  "metadata_sha256": "TEXT", "seen_until_ts": "INTEGER", "recent_from_ts": "INTEGER",
                  "learned_holdout": "INTEGER"}
#: Statements separated by `;;` (a trigger body has its own `;`).
_SCHEMA = {
    "sqlite": f"""
CREATE TABLE IF NOT EXISTS versions ({_COLUMNS});;
CREATE TABLE IF NOT EXISTS audit_log (id INTEGER PRIMARY KEY AUTOINCREMENT, {_AUDIT_COLUMNS});;
{_INDEXES}
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;;
""",
    "postgresql": f"""
CREATE TABLE IF NOT EXISTS versions ({_COLUMNS});;
CREATE TABLE IF NOT EXISTS audit_log (id BIGSERIAL PRIMARY KEY, {_AUDIT_COLUMNS});;
{_INDEXES}
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;;
CREATE OR REPLACE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();;
""",
}
#: The versions table's columns, by "is it SQLite".
_PRESENT_COLUMNS = {True: "PRAGMA table_info(versions)",
                    False: "SELECT column_name AS name FROM information_schema.columns "
                           "WHERE table_name = 'versions' AND table_schema = current_schema()"}
_NEWEST_FIRST = "major DESC, minor DESC, patch DESC"
_ORDER = f"ORDER BY {_NEWEST_FIRST}"


class ActiveVersionChanged(RegistryError):
    """Another run changed the active version after the gate compared against it."""

    def __init__(self, model_type: str, expected: object, actual: str | None) -> None:
        self.model_type, self.expected, self.actual = model_type, expected, actual
        super().__init__(f"The active version of {model_type} changed from {expected} to {actual} while the gate "
                         "was deciding; judge again against the new one.")


def trigger_from_tags(tags: Mapping[str, str]) -> str:
    """What started a run: our own tag when a schedule, sensor or service set it, else backfill/manual."""
    if tags.get(TRIGGER_TAG) in TRIGGERS:
        return tags[TRIGGER_TAG]
    return "backfill" if "dagster/backfill" in tags else "manual"


def _event_reason(reason: object, trigger: object) -> str:
    """Every status change is explained in the audit trail: a reason is required, and a known trigger."""
    if trigger not in TRIGGERS:
        raise InvalidFieldError("trigger", trigger, TRIGGERS)
    return validation.text("reason", reason)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


#: Bytes read at a time when hashing an artifact: memory stays flat however large the model.
CHUNK_BYTES = 1 << 20


class _HashingWriter:
    """A file that hashes and counts the bytes joblib streams through it.

    The model goes to disk and gets its checksum in one pass: no in-memory copy of the pickle (a
    3 MB forest was held twice before; a 100k-row forest is hundreds of MB).
    """

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        self.size += view.nbytes
        return self._fh.write(view)

    def tell(self) -> int:  # joblib aligns numpy buffers by the position
        return self.size

    def flush(self) -> None:
        self._fh.flush()


def _dump_synced(path: Path, model: Any) -> tuple[str, int]:
    """Pickle `model` straight into `path` (fsynced); returns its sha256 and size."""
    with open(path, "wb") as fh:
        writer = _HashingWriter(fh)
        joblib.dump(model, writer)
        fh.flush()
        os.fsync(fh.fileno())
    return writer.sha256.hexdigest(), writer.size


class _TreeFreeingUnpickler(NumpyUnpickler):
    """joblib's unpickler, letting go of each decision tree's arrays once the tree has copied them.

    scikit-learn's `Tree.__setstate__` copies its node and value arrays into memory of its own, but
    the unpickler's memo keeps the state dict - and with it the arrays - until the whole load ends,
    so a forest took twice its size to load: the gate's peak at 100k rows (BENCHMARKS.md). Emptying
    the dict once the tree is built frees each tree's arrays as the load goes. A tree's state is a
    dict its own `__getstate__` made, so nothing else in the pickle refers to it.
    """

    dispatch = NumpyUnpickler.dispatch.copy()

    def load_build(self) -> None:
        state, built = self.stack[-1], self.stack[-2]
        super().load_build()
        if type(built) is Tree and type(state) is dict:
            state.clear()

    dispatch[pickle.BUILD[0]] = load_build


def _load_artifact(fh: BinaryIO) -> Any:
    """Unpickle a registry artifact (always an uncompressed `joblib.dump`, see `_dump_synced`)."""
    return _TreeFreeingUnpickler(getattr(fh, "name", ""), fh, ensure_native_byte_order=True).load()


def _file_digest(fh: Any) -> tuple[str, int]:
    """sha256 and size of an open file, read in chunks from its start."""
    digest, size = hashlib.sha256(), 0
    while chunk := fh.read(CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _q(conn: sa.Connection, sql: str, **params: Any) -> sa.CursorResult:
    return conn.execute(sa.text(sql), params)


def _rows(conn: sa.Connection, sql: str, **params: Any) -> list[sa.RowMapping]:
    return list(_q(conn, sql, **params).mappings())


def _row(conn: sa.Connection, sql: str, **params: Any) -> sa.RowMapping | None:
    return _q(conn, sql, **params).mappings().first()


class ModelRegistry:
    """A registry directory and its index. Cheap to construct; the index engine is shared per process.

    `index_url`: the index's SQLAlchemy URL. Unset: `RETRAINING_DATABASE_URL` when the deployment
    shares one database, else `<root>/registry.sqlite`.
    """

    def __init__(self, root: str | os.PathLike[str], keep_archived: int = DEFAULT_KEEP_ARCHIVED,
                 index_url: str | None = None) -> None:
        self.keep_archived = validation.whole("keep_archived", keep_archived, 0, 10**6)
        self.root = validation.directory("root", root)
        self.index_url = index_url or shared_database_url() or f"sqlite:///{self.root / INDEX}"
        try:
            self._open()
        except (OSError, sa.exc.SQLAlchemyError) as err:
            raise StorageError("model registry", self._where, err) from err
        self._clear_stale_staging()

    @property
    def _where(self) -> str:
        """Where the registry lives, for error messages (never the database password)."""
        if self.index_url.startswith("sqlite"):
            return str(self.root)
        return f"{self.root} (index: {sa.make_url(self.index_url).render_as_string(hide_password=True)})"

    def _open(self) -> None:
        """Create the directory and the index (or bring an older index's schema up to date)."""
        (self.root / STAGING).mkdir(parents=True, exist_ok=True)
        self._engine = sqlstore.get_engine(self.index_url, INDEX_SCHEMA)
        sqlstore.create_schema(self._engine, INDEX_SCHEMA, _SCHEMA[self._engine.dialect.name])
        sqlite = sqlstore.is_sqlite(self._engine)
        with self._connect() as conn:
            present = {row["name"] for row in _rows(conn, _PRESENT_COLUMNS[sqlite])}
            for column, kind in _ADDED_COLUMNS.items():
                if column in present:
                    continue
                try:  # PostgreSQL waits for a concurrent migration and skips; SQLite refuses the duplicate
                    conn.exec_driver_sql(f"ALTER TABLE versions ADD COLUMN {'' if sqlite else 'IF NOT EXISTS '}"
                                         f"{column} {kind}")
                except sa.exc.OperationalError as err:  # another process migrated it first
                    if "duplicate column" not in str(err):
                        raise
            conn.commit()

    # ------------------------------------------------------------------ connections
    def _connect(self) -> sa.Connection:
        return self._engine.connect()

    def _transaction(self) -> AbstractContextManager[sa.Connection]:
        """A write transaction that holds the index's write lock from its first statement."""
        return sqlstore.write(self._engine, "versions")

    # ------------------------------------------------------------------ registration
    def register_model(
        self,
        model_type: str,
        model: Any,
        metadata: ModelMetadata,
        *,
        bump: BumpType | None = None,
        status: ModelStatus = ModelStatus.CANDIDATE,
        reference: pd.DataFrame | None = None,
        keep_warm: bool = False,
    ) -> ModelVersion:
        """Store `model` as a new immutable version; returns its record.

        `keep_warm`: the caller hands `model` over and never changes it again (the pipeline's IO
        manager), so a gate in this process may predict with it instead of unpickling the file
        (`load_for_prediction`).

        `reference`, an optional sample of the inputs (data, never unpickled), is kept beside the
        model and verified like it. The retrain pipeline writes none since drift stopped comparing
        recent inputs with the training tail (`drift.py`, feature shift); older versions keep theirs.

        The bump is MINOR, or MAJOR when the catalog changed the model's inputs since the last
        version; pass `bump` to force one. New versions start as CANDIDATE: only the promotion
        gate (or an explicit `set_model_status`) makes one ACTIVE.
        """
        spec = get_spec(model_type)
        if not isinstance(metadata, ModelMetadata):
            raise InvalidFieldError("metadata", type(metadata).__name__, "a ModelMetadata")
        if metadata.model_type != model_type:
            raise InvalidFieldError("metadata.model_type", metadata.model_type, f"{model_type!r}, as registered")
        if status not in (ModelStatus.CANDIDATE, ModelStatus.ARCHIVED):
            raise InvalidFieldError("status", status, "candidate or archived (promote to activate)")
        if metadata.trigger not in TRIGGERS:
            raise InvalidFieldError("trigger", metadata.trigger, TRIGGERS)
        if bump is not None and bump not in ("major", "minor", "patch"):
            raise InvalidFieldError("bump", bump, ("major", "minor", "patch"))
        schema = metadata.schema_fingerprint or spec.schema_fingerprint
        files = {} if reference is None else {REFERENCE: reference.to_csv(index=False).encode()}
        staging = self.root / STAGING / uuid.uuid4().hex
        try:
            staging.mkdir(parents=True)
            artifact = _dump_synced(staging / ARTIFACT, model)
            for name, data in files.items():
                _write_synced(staging / name, data)
            record = self._commit_version(model_type, staging, artifact, files, metadata, schema, bump, status)
        except (OSError, sa.exc.OperationalError) as err:  # a full or read-only disk: nothing was registered
            raise StorageError("model registry", self._where, err) from err
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if keep_warm:
            _WARM.registered(self.index_url, record, model, self.get_active_version(model_type))
        return record

    def _commit_version(
        self,
        model_type: str,
        staging: Path,
        artifact: tuple[str, int],
        files: dict[str, bytes],
        meta: ModelMetadata,
        schema: str,
        bump: BumpType | None,
        status: ModelStatus,
    ) -> ModelVersion:
        """Allocate the number, index the version and move its files into place: one transaction.

        The row is inserted before the rename, so a row the database refuses leaves no directory
        behind; a crash after the rename but before COMMIT leaves a directory without a row, which
        is invisible and cleared when the number is next allocated.
        """
        with self._transaction() as conn:
            latest = _row(conn, f"SELECT version, schema_fingerprint FROM versions WHERE model_type = :mt {_ORDER} "
                          "LIMIT 1", mt=model_type)
            previous = latest["version"] if latest else None
            version = bump_version(previous, bump or bump_for_retrain(latest and latest["schema_fingerprint"], schema))
            if meta.version is not None and meta.version != version:
                raise RegistryError(f"{model_type}: the metadata expects v{meta.version}, but the next version is "
                                    f"v{version} (latest registered: {previous}); nothing was registered.")
            final = self.root / model_type / version
            if final.exists():  # left by a crash between rename and commit: never indexed, never seen
                shutil.rmtree(final)
            row = {
                "model_type": model_type, "version": version, "status": status.value,
                "sha256": artifact[0], "size_bytes": artifact[1],
                "created_at": _now(), "metrics": json.dumps(meta.performance_metrics),
                "feature_names": json.dumps(list(meta.feature_names)),
                "training_samples": int(meta.training_samples), "training_duration": float(meta.training_duration),
                "hyperparameters": json.dumps(meta.hyperparameters, default=str), "schema_fingerprint": schema,
                "data_fingerprint": meta.data_fingerprint, "python_version": platform.python_version(),
                "sklearn_version": sklearn.__version__, "numpy_version": np.__version__,
                "run_id": meta.run_id, "trigger": meta.trigger,
                "train_start_ts": meta.train_start_ts, "train_end_ts": meta.train_end_ts,
                "seen_until_ts": meta.seen_until_ts,
                "recent_from_ts": meta.recent_from_ts, "learned_holdout": int(meta.learned_holdout),
                "reference_sha256": hashlib.sha256(files[REFERENCE]).hexdigest() if REFERENCE in files else None,
            }
            described = json.dumps(row, indent=2).encode()
            row["metadata_sha256"] = hashlib.sha256(described).hexdigest()
            row["major"], row["minor"], row["patch"] = parse_version(version)
            _q(conn, f"INSERT INTO versions ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})", **row)
            self._audit(conn, model_type, "registered", previous, version, "new version registered",
                        meta.trigger, meta.run_id)
            _write_synced(staging / METADATA, described)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, final)
            _fsync_dir(final.parent)
        return self.get_version(model_type, version)

    # ------------------------------------------------------------------ queries
    def _record(self, row: Mapping[str, Any]) -> ModelVersion:
        return ModelVersion(
            model_type=row["model_type"], version=row["version"], status=ModelStatus(row["status"]),
            sha256=row["sha256"], size_bytes=row["size_bytes"],
            path=self.root / row["model_type"] / row["version"] / ARTIFACT, created_at=row["created_at"],
            metrics=json.loads(row["metrics"]), feature_names=json.loads(row["feature_names"]),
            training_samples=row["training_samples"], training_duration=row["training_duration"],
            hyperparameters=json.loads(row["hyperparameters"]), schema_fingerprint=row["schema_fingerprint"],
            data_fingerprint=row["data_fingerprint"], python_version=row["python_version"],
            sklearn_version=row["sklearn_version"], numpy_version=row["numpy_version"],
            run_id=row["run_id"], trigger=row["trigger"],
            train_start_ts=row["train_start_ts"], train_end_ts=row["train_end_ts"], seen_until_ts=row["seen_until_ts"],
            recent_from_ts=row["recent_from_ts"], learned_holdout=bool(row["learned_holdout"]),
            reference_sha256=row["reference_sha256"], metadata_sha256=row["metadata_sha256"],
        )

    def list_versions(self, model_type: str | None = None) -> list[ModelVersion]:
        """Every version (newest first), or those of one model type."""
        with self._connect() as conn:
            if model_type is None:
                rows = _rows(conn, f"SELECT * FROM versions ORDER BY model_type, {_NEWEST_FIRST}")
            else:
                get_spec(model_type)
                rows = _rows(conn, f"SELECT * FROM versions WHERE model_type = :mt {_ORDER}", mt=model_type)
        return [self._record(r) for r in rows]

    def get_version(self, model_type: str, version: str) -> ModelVersion:
        get_spec(model_type)
        parse_version(version)
        with self._connect() as conn:
            row = _row(conn, "SELECT * FROM versions WHERE model_type = :mt AND version = :v", mt=model_type, v=version)
        if row is None:
            known = [v.version for v in self.list_versions(model_type)] or "none registered yet"
            raise InvalidFieldError("version", version, known)
        return self._record(row)

    def get_latest_version(self, model_type: str) -> str | None:
        """The highest version number ever registered for the model type (any status)."""
        get_spec(model_type)
        with self._connect() as conn:
            row = _row(conn, f"SELECT version FROM versions WHERE model_type = :mt {_ORDER} LIMIT 1", mt=model_type)
        return row["version"] if row else None

    def get_active_version(self, model_type: str) -> str | None:
        get_spec(model_type)
        with self._connect() as conn:
            return self._active_in(conn, model_type)

    def get_previous_version(self, model_type: str, current_version: str | None = None) -> str | None:
        """The newest ARCHIVED version below `current_version` (default: the active one).

        Archived versions are the ones that were served before; rejected candidates never were,
        so they are never a rollback target.
        """
        current = current_version or self.get_active_version(model_type)
        if current is None:
            return None
        major, minor, patch = parse_version(current)
        with self._connect() as conn:
            row = _row(conn, "SELECT version FROM versions WHERE model_type = :mt AND status = 'archived' AND "
                             "(major < :a OR (major = :a AND minor < :b) OR (major = :a AND minor = :b AND "
                             f"patch < :c)) {_ORDER} LIMIT 1", mt=model_type, a=major, b=minor, c=patch)
        return row["version"] if row else None

    def audit_trail(self, model_type: str | None = None) -> list[AuditEntry]:
        with self._connect() as conn:
            if model_type is None:
                rows = _rows(conn, "SELECT * FROM audit_log ORDER BY id")
            else:
                get_spec(model_type)
                rows = _rows(conn, "SELECT * FROM audit_log WHERE model_type = :mt ORDER BY id", mt=model_type)
        return [AuditEntry(**dict(r)) for r in rows]

    # ------------------------------------------------------------------ loading
    def load_model(self, model_type: str, version: str | None = None, *, allow_version_mismatch: bool = False) -> Any:
        """The model object of `version` (default: the active one), verified before unpickling."""
        return self.load_version(model_type, version, allow_version_mismatch=allow_version_mismatch)[0]

    def load_for_prediction(self, model_type: str, version: str) -> Any:
        """`version`'s model to predict with, never to fit or change: this process's unpickled copy
        when it has one (`_WarmModels`), else loaded as `load_model` loads it. Either way the file is
        verified against its checksum first, so a version whose file broke is refused alike."""
        record = self.get_version(model_type, version)
        warm = _WARM.get(self.index_url, record)
        if warm is None or record.sklearn_version != sklearn.__version__:
            model, record = self.load_version(model_type, version)
            _WARM.loaded(self.index_url, record, model)
            return model
        with self._verified_file(record):
            return warm

    def load_version(
        self, model_type: str, version: str | None = None, *, allow_version_mismatch: bool = False
    ) -> tuple[Any, ModelVersion]:
        if version is None:
            version = self.get_active_version(model_type)
            if version is None:
                raise RegistryError(f"No active version of {model_type} to load; train one first.")
        record = self.get_version(model_type, version)
        if record.sklearn_version != sklearn.__version__ and not allow_version_mismatch:
            raise ModelIntegrityError(
                f"{model_type} v{version} was trained with scikit-learn {record.sklearn_version}, this "
                f"process has {sklearn.__version__}; retrain it (or load with allow_version_mismatch=True)."
            )
        with self._verified_file(record) as fh, warnings.catch_warnings():
            warnings.simplefilter("error", InconsistentVersionWarning)
            try:
                return _load_artifact(fh), record
            except InconsistentVersionWarning as err:
                raise ModelIntegrityError(f"{model_type} v{version}: {err}") from err

    @contextmanager
    def _verified_file(self, record: ModelVersion) -> Iterator[BinaryIO]:
        """The artifact, open at its start, only if its bytes are exactly what was registered.

        Hashed in chunks, then unpickled from the same open file: what is loaded is what was
        checked (a rename over the path cannot swap it), and memory never holds the pickle whole.
        """
        if record.status == ModelStatus.PURGED:
            raise RegistryError(f"{record.model_type} v{record.version} was purged by retention; its file is gone.")
        try:
            fh = open(record.path, "rb")  # noqa: SIM115 - closed below, after the caller read it
        except FileNotFoundError:
            raise ModelIntegrityError(f"{record.model_type} v{record.version}: {record.path} is missing.") from None
        with fh:
            digest, size = _file_digest(fh)
            if size != record.size_bytes or digest != record.sha256:
                raise ModelIntegrityError(
                    f"{record.model_type} v{record.version}: {record.path} does not match the registry "
                    f"(sha256 {digest[:12]}…, {size} bytes; recorded {record.sha256[:12]}…, "
                    f"{record.size_bytes} bytes). Refusing to load a changed or truncated model."
                )
            fh.seek(0)
            yield fh

    def _verify_artifact(self, record: ModelVersion) -> None:
        with self._verified_file(record):
            pass

    def load_reference(self, model_type: str, version: str) -> pd.DataFrame | None:
        """The training-input sample stored with a version (None when it was registered without one).

        Verified like the model: a changed, truncated or garbage file is refused, never parsed.
        """
        record = self.get_version(model_type, version)
        path = record.path.with_name(REFERENCE)
        if record.reference_sha256 is None and not path.exists():
            return None
        data = self._checked_file(record, path, record.reference_sha256)
        try:
            return pd.read_csv(io.BytesIO(data))
        except (UnicodeDecodeError, ValueError) as err:  # pandas' ParserError is a ValueError
            raise ModelIntegrityError(f"{model_type} v{version}: {path} is not a readable CSV ({err}).") from None

    def _checked_file(self, record: ModelVersion, path: Path, sha256: str | None) -> bytes:
        """A file beside the model, only if its bytes are the ones recorded (None: recorded before checksums)."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelIntegrityError(f"{record.model_type} v{record.version}: {path} is missing.") from None
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise ModelIntegrityError(
                f"{record.model_type} v{record.version}: {path} does not match the registry's checksum; refusing "
                "to read a changed or truncated file."
            )
        return data

    def load_metadata(self, model_type: str, version: str) -> dict[str, Any]:
        """The version's `metadata.json`, checked against the index's checksum."""
        record = self.get_version(model_type, version)
        data = self._checked_file(record, record.path.with_name(METADATA), record.metadata_sha256)
        try:
            return json.loads(data)
        except ValueError as err:
            raise ModelIntegrityError(f"{model_type} v{version}: metadata.json is not JSON ({err}).") from None

    def verify(self, model_type: str, version: str) -> ModelVersion:
        """Check every file of a version against its checksum and that the model unpickles; returns its record."""
        record = self.load_version(model_type, version)[1]
        if record.metadata_sha256 is not None:
            self.load_metadata(model_type, version)
        if record.reference_sha256 is not None:
            self.load_reference(model_type, version)
        return record

    # ------------------------------------------------------------------ status changes
    def set_model_status(
        self,
        model_type: str,
        version: str,
        status: ModelStatus | str,
        *,
        reason: str = "status set by hand",
        trigger: str = "manual",
        run_id: str | None = None,
    ) -> None:
        """The spec's `set_model_status`, with the one-active invariant enforced.

        Setting ACTIVE archives the current active version in the same transaction, and is only
        allowed for a version that was served before (a candidate goes through the gate). The
        active version cannot be moved to another status directly - that would leave none active;
        use `rollback` or activate another version. ARCHIVED means "served before", so only such
        versions may be archived.
        """
        reason = _event_reason(reason, trigger)
        settable = [s.value for s in ModelStatus if s != ModelStatus.PURGED]
        if status not in settable:
            raise InvalidFieldError("status", status, settable)
        status = ModelStatus(status)
        record = self.get_version(model_type, version)
        if status == ModelStatus.ACTIVE:
            self._require_served(record, "activated by hand")
            self._activate(record, "activated", reason, trigger, run_id)
            return
        if record.status == ModelStatus.ACTIVE and status == ModelStatus.ARCHIVED:
            self._hand_over(record, reason, trigger, run_id)
            return
        if record.status == ModelStatus.ACTIVE:
            raise RegistryError(
                f"{model_type} v{version} is the active version; activate another version or call "
                f"rollback() instead of setting it to {status.value} (one version must stay active)."
            )
        if status == ModelStatus.ARCHIVED and record.status in (ModelStatus.REJECTED, ModelStatus.ABANDONED):
            return  # already out of service, and never served: it must not become a rollback target
        if status == ModelStatus.ARCHIVED:
            self._require_served(record, "archived")
        with self._transaction() as conn:
            _q(conn, "UPDATE versions SET status = :s WHERE model_type = :mt AND version = :v",
               s=status.value, mt=model_type, v=version)
            self._audit(conn, model_type, f"set_{status.value}", record.status.value, version, reason, trigger, run_id)

    def _hand_over(self, record: ModelVersion, reason: str, trigger: str, run_id: str | None) -> None:
        """Archive the active version by restoring the previous served one in the same transaction.

        This is the spec's rollback recipe (archive the current version, then activate the old
        one) done as one step, so there is an active version at every instant; the recipe's second
        call, activating the old version, then finds it active and changes nothing.
        """
        target = self.get_previous_version(record.model_type, record.version)
        if target is None:
            raise RegistryError(
                f"{record.model_type} v{record.version} is the active version and no earlier served version "
                "exists to take over; it stays active (one version must be active at every instant)."
            )
        self.verify(record.model_type, target)
        self._activate(self.get_version(record.model_type, target), "rolled_back", reason, trigger, run_id,
                       if_active_is=(record.version,))

    def was_served(self, model_type: str, version: str) -> bool:
        """Whether the version was ever active (promoted by the gate, or restored after that)."""
        with self._connect() as conn:
            row = _row(conn, f"SELECT 1 FROM audit_log WHERE model_type = :mt AND to_version = :v AND event IN "
                             f"({', '.join(repr(e) for e in SERVING_EVENTS)}) LIMIT 1", mt=model_type, v=version)
        return row is not None

    def _require_served(self, record: ModelVersion, action: str) -> None:
        if record.status in (ModelStatus.ACTIVE, ModelStatus.ARCHIVED) or self.was_served(
            record.model_type, record.version
        ):
            return
        raise RegistryError(
            f"{record.model_type} v{record.version} is {record.status.value} and was never promoted, so it "
            f"cannot be {action}: only versions that passed the promotion gate are ever served."
        )

    def promote(self, model_type: str, version: str, *, reason: str, trigger: str = "manual",
                run_id: str | None = None, if_active_is: tuple[str | None] | None = None) -> str | None:
        """Make `version` ACTIVE (archiving the old one); returns the version it replaced.

        `if_active_is=(version,)` makes the swap conditional: when another run changed the active
        version since the gate judged against it, nothing changes and `ActiveVersionChanged` is
        raised so the gate can judge again against the new one.
        """
        reason = _event_reason(reason, trigger)
        record = self.get_version(model_type, version)
        if record.status != ModelStatus.CANDIDATE:
            self._require_served(record, "promoted")
        return self._activate(record, "promoted", reason, trigger, run_id, if_active_is)

    def reject(self, model_type: str, version: str, *, reason: str, trigger: str = "manual",
               run_id: str | None = None) -> None:
        """Mark a candidate REJECTED: it is kept for inspection but never served.

        Rejecting an already rejected version is a no-op, so re-running the gate from the UI is safe.
        """
        reason = _event_reason(reason, trigger)
        record = self.get_version(model_type, version)
        if record.status == ModelStatus.REJECTED:
            return
        if record.status != ModelStatus.CANDIDATE:
            raise RegistryError(f"{model_type} v{version} is {record.status.value}; only a candidate can be rejected.")
        with self._transaction() as conn:
            _q(conn, "UPDATE versions SET status = 'rejected' WHERE model_type = :mt AND version = :v",
               mt=model_type, v=version)
            active = self._active_in(conn, model_type)
            self._audit(conn, model_type, "rejected", active, version, reason, trigger, run_id)
        self._apply_retention(model_type)

    def abandon(self, model_type: str, version: str, *, reason: str, run_id: str | None = None) -> bool:
        """Mark a candidate whose run ended before the gate decided: never served, kept for inspection.

        Returns False (changing nothing) when the version is no longer a candidate - the gate got
        there first.
        """
        reason = _event_reason(reason, "manual")
        with self._transaction() as conn:
            updated = _q(conn, "UPDATE versions SET status = 'abandoned' "
                         "WHERE model_type = :mt AND version = :v AND status = 'candidate'", mt=model_type, v=version
                         ).rowcount
            if updated:
                self._audit(conn, model_type, "abandoned", self._active_in(conn, model_type), version, reason,
                            "manual", run_id)
        if updated:
            self._apply_retention(model_type)
        return bool(updated)

    def candidates(self) -> list[ModelVersion]:
        """Every version still waiting for the gate, oldest first."""
        with self._connect() as conn:
            rows = _rows(conn, "SELECT * FROM versions WHERE status = 'candidate' ORDER BY created_at")
        return [self._record(r) for r in rows]

    def version_of_run(self, model_type: str, run_id: str) -> ModelVersion | None:
        """The version a run registered (a run trains one model), or None."""
        get_spec(model_type)
        with self._connect() as conn:
            row = _row(conn, f"SELECT * FROM versions WHERE model_type = :mt AND run_id = :run {_ORDER} LIMIT 1",
                       mt=model_type, run=run_id)
        return self._record(row) if row else None

    def rollback(
        self,
        model_type: str,
        to_version: str | None = None,
        *,
        reason: str = "manual rollback",
        trigger: str = "manual",
        run_id: str | None = None,
        if_active_is: str | None = None,
    ) -> tuple[str, str]:
        """Restore the previous version (or `to_version`) as ACTIVE; returns (from, to).

        The target is checked to load and match its checksum before the swap, so a rollback can
        never leave a broken model active. `if_active_is`: a compare-and-swap for automatic rollbacks -
        judged against one active version, they must not undo a promotion that came in between
        (`ActiveVersionChanged`).
        """
        reason = _event_reason(reason, trigger)
        if to_version is not None:
            parse_version(to_version, "to_version")
        current = self.get_active_version(model_type)
        if current is None:
            raise RegistryError(f"Nothing to roll back: {model_type} has no active version.")
        target = to_version or self.get_previous_version(model_type, current)
        if target is None:
            raise RegistryError(f"Nothing to roll back to: {model_type} has no archived version older than v{current}.")
        if target == current:
            raise RegistryError(f"{model_type} v{target} is already the active version.")
        record = self.get_version(model_type, target)
        if record.status == ModelStatus.PURGED:
            raise RegistryError(f"{model_type} v{target} is purged and cannot be restored.")
        self._require_served(record, "restored by a rollback")
        self.verify(model_type, target)
        expected = (if_active_is,) if if_active_is is not None else None
        self._activate(record, "rolled_back", reason, trigger, run_id, if_active_is=expected)
        return current, target

    def _activate(self, record: ModelVersion, event: str, reason: str, trigger: str, run_id: str | None,
                  if_active_is: tuple[str | None] | None = None) -> str | None:
        if record.status in (ModelStatus.PURGED, ModelStatus.ABANDONED):
            raise RegistryError(f"{record.model_type} v{record.version} is {record.status.value} and cannot be "
                                "activated.")
        self._verify_artifact(record)  # never serve a file that is not what was registered
        with self._transaction() as conn:
            old = self._active_in(conn, record.model_type)
            # the compare-and-swap first: a version made active by someone else is a change all the same
            if if_active_is is not None and old != if_active_is[0]:
                raise ActiveVersionChanged(record.model_type, if_active_is[0], old)
            if old == record.version:
                return old
            current = _row(conn, "SELECT status FROM versions WHERE model_type = :mt AND version = :v",
                           mt=record.model_type, v=record.version)["status"]
            if current in (ModelStatus.PURGED, ModelStatus.ABANDONED):  # changed since it was read
                raise RegistryError(f"{record.model_type} v{record.version} is {current} and cannot be activated.")
            _q(conn, "UPDATE versions SET status = 'archived' WHERE model_type = :mt AND status = 'active'",
               mt=record.model_type)
            _q(conn, "UPDATE versions SET status = 'active' WHERE model_type = :mt AND version = :v",
               mt=record.model_type, v=record.version)
            self._audit(conn, record.model_type, event, old, record.version, reason, trigger, run_id)
        self._apply_retention(record.model_type)
        return old

    @staticmethod
    def _active_in(conn: sa.Connection, model_type: str) -> str | None:
        row = _row(conn, "SELECT version FROM versions WHERE model_type = :mt AND status = 'active'", mt=model_type)
        return row["version"] if row else None

    @staticmethod
    def _audit(conn: sa.Connection, model_type: str, event: str, from_version: str | None,
               to_version: str | None, reason: str, trigger: str, run_id: str | None) -> None:
        """Every state change goes through here, inside its transaction: a bad trigger undoes it."""
        if trigger not in TRIGGERS:
            raise InvalidFieldError("trigger", trigger, TRIGGERS)
        _q(conn, "INSERT INTO audit_log (at, model_type, event, from_version, to_version, reason, trigger, run_id) "
           "VALUES (:at, :mt, :event, :old, :new, :reason, :trigger, :run)", at=_now(), mt=model_type, event=event,
           old=from_version, new=to_version, reason=reason, trigger=trigger, run=run_id)

    # ------------------------------------------------------------------ housekeeping
    def _apply_retention(self, model_type: str) -> None:
        """Keep the newest `keep_archived` archived, rejected and abandoned versions; never the active or previous."""
        protected = {self.get_active_version(model_type), self.get_previous_version(model_type)}
        doomed: list[tuple[str, str]] = []  # (version, status); only the columns retention needs, not records
        for status in (ModelStatus.ARCHIVED, ModelStatus.REJECTED, ModelStatus.ABANDONED):
            with self._connect() as conn:
                rows = _rows(conn, f"SELECT version FROM versions WHERE model_type = :mt AND status = :s {_ORDER}",
                             mt=model_type, s=status.value)
            same = [r["version"] for r in rows if r["version"] not in protected]
            doomed += [(version, status.value) for version in same[self.keep_archived :]]
        if not doomed:
            return
        with self._transaction() as conn:
            for version, status in doomed:
                _q(conn, "UPDATE versions SET status = 'purged' WHERE model_type = :mt AND version = :v "
                   "AND status = :s", mt=model_type, v=version, s=status)
                self._audit(conn, model_type, "purged", None, version,
                            f"retention keeps {self.keep_archived} {status} versions", "manual", None)
        for version, _status in doomed:
            shutil.rmtree(self.root / model_type / version, ignore_errors=True)

    def _clear_stale_staging(self) -> None:
        """Remove staging dirs of registrations that crashed long ago (live ones are recent)."""
        cutoff = time.time() - _STALE_STAGING_S
        for entry in (self.root / STAGING).iterdir():
            try:
                stale = entry.stat().st_mtime < cutoff
            except FileNotFoundError:  # another process's registration finished and removed it meanwhile
                continue
            if stale:
                shutil.rmtree(entry, ignore_errors=True)
