"""The job store: retraining jobs users add and remove at run time, validated before they persist.

A job says *when* a model type is retrained: daily / weekly / monthly at a time of day, or
on_drift past a threshold. An on_drift job also says which evidence counts (`drift_signal`):
`accuracy` (logged outcomes fell past the threshold; the default), `inputs` (the sensors' levels
jumped: for models whose outcomes arrive too late or too rarely to judge) or `either`. Accuracy is
the default because it was measured to serve better: at 8 units, retraining on an input shift a day
or two after it flagged covariate drifts 2 days sooner but recovered 13 of 32 degraded pairs
against 17 of 31 (BENCHMARKS.md) - a retrain with two days of the new world is often no better.

The store keeps configuration only; when a job last ran and how it ended come from Dagster's own
run storage (runs carry a `retraining/job_id` tag), so there is one record of every run, not two that can disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from retraining_pipelines import sqlstore, validation
from retraining_pipelines.catalog import get_spec
from retraining_pipelines.errors import InvalidFieldError, StorageError
from retraining_pipelines.settings import dagster_home, shared_database_url

SCHEDULE_TYPES = ("daily", "weekly", "monthly", "on_drift")
SCHEDULED = ("daily", "weekly", "monthly")
DRIFT_SIGNALS = ("accuracy", "inputs", "either")
DEFAULT_DRIFT_SIGNAL = "accuracy"
DEFAULT_SCHEDULE_TIME = "03:00"  # off-peak, as the spec recommends for a Raspberry Pi
JOB_ID_TAG = "retraining/job_id"


@dataclass(frozen=True)
class JobSpec:
    """A validated job definition (what `add_job` stores)."""

    model_type: str
    schedule_type: str
    schedule_day: int | None = None
    schedule_time: str | None = None
    timezone: str = "UTC"
    drift_threshold: float | None = None
    min_samples: int | None = None
    time_range: str = "last_90d"
    drift_signal: str | None = None  # on_drift only: which evidence triggers a retrain

    @property
    def schedule_config(self) -> dict[str, Any]:
        """The spec's `schedule_config`: what the trigger needs, nothing else."""
        if self.schedule_type == "on_drift":
            return {"drift_threshold": self.drift_threshold, "drift_signal": self.drift_signal}
        config: dict[str, Any] = {"time": self.schedule_time, "timezone": self.timezone}
        if self.schedule_type == "weekly":
            config = {"day": self.schedule_day, **config}
        return config


@dataclass(frozen=True)
class StoredJob(JobSpec):
    job_id: int = 0
    enabled: bool = True
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "schedule_config": self.schedule_config}


def validate_job(
    model_type: str,
    schedule_type: str,
    schedule_day: int | None = None,
    schedule_time: str | None = None,
    drift_threshold: float | None = None,
    min_samples: int | None = None,
    timezone: str = "UTC",
    time_range: str = "last_90d",
    drift_signal: str | None = None,
) -> JobSpec:
    """Check every field against the spec's rules (`validation.py`); the first problem raises, naming the field."""
    spec = get_spec(model_type)
    if schedule_type not in SCHEDULE_TYPES:
        raise InvalidFieldError("schedule_type", schedule_type, SCHEDULE_TYPES)
    if schedule_type == "weekly":
        validation.schedule_day(schedule_day)
    elif schedule_day is not None:
        raise InvalidFieldError("schedule_day", schedule_day, f"nothing for {schedule_type} jobs (weekly only)")
    if schedule_type == "on_drift":
        if schedule_time is not None:
            raise InvalidFieldError("schedule_time", schedule_time, "nothing for on_drift jobs (they run on drift)")
        drift_threshold = validation.drift_threshold(drift_threshold)
        drift_signal = validation.one_of("drift_signal", DEFAULT_DRIFT_SIGNAL if drift_signal is None else drift_signal,
                                         DRIFT_SIGNALS)
    else:
        if drift_threshold is not None:
            raise InvalidFieldError("drift_threshold", drift_threshold, "nothing for scheduled jobs (on_drift only)")
        if drift_signal is not None:
            raise InvalidFieldError("drift_signal", drift_signal, "nothing for scheduled jobs (on_drift only)")
        schedule_time = validation.schedule_time(schedule_time if schedule_time is not None else DEFAULT_SCHEDULE_TIME)
    validation.time_range(time_range)
    return JobSpec(
        model_type=model_type, schedule_type=schedule_type, schedule_day=schedule_day,
        schedule_time=schedule_time, timezone=validation.timezone(timezone), drift_threshold=drift_threshold,
        min_samples=spec.min_samples if min_samples is None else validation.min_samples(min_samples),
        time_range=time_range, drift_signal=drift_signal,
    )


#: How far back the seeded safety nets' drift retrains may reach: the spec's 90 days. A drift retrain
#: learns the weeks since the change; only when the sensors jumped with it does a second candidate
#: learn the whole window, older rows weighted down, and the hold-out picks (`drift_policy.drift_run_config`).
DRIFT_TIME_RANGE = "last_90d"
#: The spec's recommended set-up, seeded once on first start; users may remove any of it.
DEFAULT_JOBS: tuple[JobSpec, ...] = (
    validate_job("climate_optimizer", "weekly", schedule_day=2, schedule_time="03:00", min_samples=100),
    validate_job("climate_optimizer", "on_drift", drift_threshold=0.20, min_samples=100, time_range=DRIFT_TIME_RANGE),
    validate_job("disease", "on_drift", drift_threshold=0.15, min_samples=50, time_range=DRIFT_TIME_RANGE),
    validate_job("growth_stage", "weekly", schedule_day=6, schedule_time="03:30"),
    validate_job("personalized_growth", "monthly", schedule_time="04:00", min_samples=200),
    validate_job("irrigation_threshold", "on_drift", drift_threshold=0.15, time_range=DRIFT_TIME_RANGE),
)

_COLUMNS = """model_type TEXT NOT NULL, schedule_type TEXT NOT NULL,
    schedule_day INTEGER, schedule_time TEXT, timezone TEXT NOT NULL, drift_threshold DOUBLE PRECISION,
    min_samples BIGINT NOT NULL, time_range TEXT NOT NULL, enabled INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL, drift_signal TEXT"""
_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);;"
_SCHEMA = {
    "sqlite": f"CREATE TABLE IF NOT EXISTS jobs (job_id INTEGER PRIMARY KEY AUTOINCREMENT, {_COLUMNS});; {_META}",
    "postgresql": f"CREATE TABLE IF NOT EXISTS jobs (job_id BIGSERIAL PRIMARY KEY, {_COLUMNS});; {_META}",
}
#: The PostgreSQL schema of the shared job store (Dagster has a `jobs` table of its own).
SCHEMA_NAME = "retraining_jobs"


class JobStore:
    """Jobs in SQLite (default `DAGSTER_HOME/retraining_jobs.sqlite`) or the shared database; one transaction per write.

    `url` overrides where: a SQLAlchemy URL. `path` names the SQLite file (tests, the CLI).
    """

    def __init__(self, path: str | Path | None = None, *, url: str | None = None) -> None:
        self.path = Path(path) if path else dagster_home() / "retraining_jobs.sqlite"
        self.url = url or (None if path else shared_database_url()) or f"sqlite:///{self.path}"
        try:
            if self.url.startswith("sqlite"):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._engine = sqlstore.get_engine(self.url, SCHEMA_NAME)
            sqlstore.create_schema(self._engine, SCHEMA_NAME, _SCHEMA[self._engine.dialect.name])
            self._add_missing_columns()
        except (OSError, sa.exc.SQLAlchemyError) as err:
            raise StorageError("job store", self.path if self.url.startswith("sqlite") else SCHEMA_NAME, err) from err

    def _add_missing_columns(self) -> None:
        """A store made by an earlier release lacks `drift_signal`: its on_drift jobs keep judging by accuracy."""
        if "drift_signal" in {c["name"] for c in sa.inspect(self._engine).get_columns("jobs")}:
            return
        with sqlstore.write(self._engine, "jobs") as conn:
            if "drift_signal" not in {c["name"] for c in sa.inspect(conn).get_columns("jobs")}:
                conn.execute(sa.text("ALTER TABLE jobs ADD COLUMN drift_signal TEXT"))
                conn.execute(sa.text("UPDATE jobs SET drift_signal = 'accuracy' WHERE schedule_type = 'on_drift'"))

    def add(self, job: JobSpec) -> int:
        with sqlstore.write(self._engine, "jobs") as conn:
            return _insert(conn, job)

    def remove(self, job_id: int) -> None:
        validation.job_id(job_id)
        with sqlstore.write(self._engine, "jobs") as conn:
            deleted = conn.execute(sa.text("DELETE FROM jobs WHERE job_id = :id"), {"id": job_id}).rowcount
        if not deleted:
            raise InvalidFieldError("job_id", job_id, self._ids_text())

    def get(self, job_id: int) -> StoredJob:
        validation.job_id(job_id)
        with self._engine.connect() as conn:
            row = conn.execute(sa.text("SELECT * FROM jobs WHERE job_id = :id"), {"id": job_id}).mappings().first()
        if row is None:
            raise InvalidFieldError("job_id", job_id, self._ids_text())
        return _job(row)

    def list(self, schedule_type: str | None = None) -> list[StoredJob]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM jobs ORDER BY job_id")).mappings().all()
        jobs = [_job(r) for r in rows]
        return [j for j in jobs if schedule_type is None or j.schedule_type == schedule_type]

    def seed_defaults_once(self, defaults: tuple[JobSpec, ...] = DEFAULT_JOBS) -> bool:
        """Add the recommended jobs on first start only; a user's removals stay removed."""
        with sqlstore.write(self._engine, "jobs") as conn:
            if conn.execute(sa.text("SELECT 1 FROM meta WHERE key = 'seeded'")).first():
                return False
            conn.execute(sa.text("INSERT INTO meta (key, value) VALUES ('seeded', :at)"),
                         {"at": datetime.now(UTC).isoformat()})
            for job in defaults:
                _insert(conn, job)
        return True

    def _ids_text(self) -> str:
        ids = [j.job_id for j in self.list()]
        return f"an existing job id ({', '.join(map(str, ids))})" if ids else "an existing job id (there are none)"


def _insert(conn: sa.Connection, job: JobSpec) -> int:
    values = {**asdict(job), "created_at": datetime.now(UTC).isoformat()}
    columns = ("model_type", "schedule_type", "schedule_day", "schedule_time", "timezone", "drift_threshold",
               "min_samples", "time_range", "created_at", "drift_signal")
    sql = (f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)}) "
           "RETURNING job_id")
    return int(conn.execute(sa.text(sql), {c: values[c] for c in columns}).scalar_one())


def _job(row: Mapping[str, Any]) -> StoredJob:
    return StoredJob(
        model_type=row["model_type"], schedule_type=row["schedule_type"], schedule_day=row["schedule_day"],
        schedule_time=row["schedule_time"], timezone=row["timezone"], drift_threshold=row["drift_threshold"],
        min_samples=row["min_samples"], time_range=row["time_range"], drift_signal=row["drift_signal"],
        job_id=row["job_id"],
        enabled=bool(row["enabled"]), created_at=row["created_at"],
    )
