"""Job validation and the job store: every rule names its field and stores nothing on failure."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from retraining_pipelines.catalog import get_spec
from retraining_pipelines.errors import InvalidFieldError
from retraining_pipelines.jobstore import (
    DEFAULT_DRIFT_SIGNAL,
    DEFAULT_JOBS,
    DEFAULT_SCHEDULE_TIME,
    DRIFT_SIGNALS,
    JobStore,
    validate_job,
)

BAD_JOBS = [
    ({"model_type": "tomato", "schedule_type": "daily"}, "model_type"),
    ({"model_type": "disease", "schedule_type": "hourly"}, "schedule_type"),
    ({"model_type": "disease", "schedule_type": "weekly"}, "schedule_day"),
    ({"model_type": "disease", "schedule_type": "weekly", "schedule_day": 7}, "schedule_day"),
    ({"model_type": "disease", "schedule_type": "weekly", "schedule_day": -1}, "schedule_day"),
    ({"model_type": "disease", "schedule_type": "weekly", "schedule_day": True}, "schedule_day"),
    ({"model_type": "disease", "schedule_type": "daily", "schedule_day": 2}, "schedule_day"),
    ({"model_type": "disease", "schedule_type": "monthly", "schedule_day": 0}, "schedule_day"),
    ({"model_type": "disease", "schedule_type": "daily", "schedule_time": "24:00"}, "schedule_time"),
    ({"model_type": "disease", "schedule_type": "daily", "schedule_time": "3:00"}, "schedule_time"),
    ({"model_type": "disease", "schedule_type": "daily", "schedule_time": "03:60"}, "schedule_time"),
    ({"model_type": "disease", "schedule_type": "daily", "schedule_time": 300}, "schedule_time"),
    ({"model_type": "disease", "schedule_type": "on_drift"}, "drift_threshold"),
    ({"model_type": "disease", "schedule_type": "on_drift", "drift_threshold": 0}, "drift_threshold"),
    ({"model_type": "disease", "schedule_type": "on_drift", "drift_threshold": 1}, "drift_threshold"),
    ({"model_type": "disease", "schedule_type": "on_drift", "drift_threshold": "0.2"}, "drift_threshold"),
    ({"model_type": "disease", "schedule_type": "on_drift", "drift_threshold": 0.2, "schedule_time": "03:00"},
     "schedule_time"),
    ({"model_type": "disease", "schedule_type": "daily", "drift_threshold": 0.2}, "drift_threshold"),
    ({"model_type": "disease", "schedule_type": "on_drift", "drift_threshold": 0.2, "drift_signal": "labels"},
     "drift_signal"),
    ({"model_type": "disease", "schedule_type": "on_drift", "drift_threshold": 0.2, "drift_signal": 1},
     "drift_signal"),
    ({"model_type": "disease", "schedule_type": "daily", "drift_signal": "inputs"}, "drift_signal"),
    ({"model_type": "disease", "schedule_type": "daily", "min_samples": 0}, "min_samples"),
    ({"model_type": "disease", "schedule_type": "daily", "min_samples": 2.5}, "min_samples"),
    ({"model_type": "disease", "schedule_type": "daily", "timezone": "Mars/Olympus"}, "timezone"),
    ({"model_type": "disease", "schedule_type": "daily", "time_range": "90 days"}, "time_range"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_JOBS)
def test_every_invalid_job_names_its_field_and_stores_nothing(tmp_path: Path, kwargs: dict, field: str) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    with pytest.raises(InvalidFieldError) as err:
        store.add(validate_job(**kwargs))
    assert err.value.field == field
    assert f"Invalid {field}" in str(err.value) and "Allowed:" in str(err.value)
    assert store.list() == []


def test_valid_jobs_get_defaults_and_spec_schedule_config() -> None:
    weekly = validate_job("climate_optimizer", "weekly", schedule_day=2, schedule_time="03:00", min_samples=100)
    assert weekly.schedule_config == {"day": 2, "time": "03:00", "timezone": "UTC"}
    drift = validate_job("disease", "on_drift", drift_threshold=0.15)
    assert drift.schedule_config == {"drift_threshold": 0.15, "drift_signal": DEFAULT_DRIFT_SIGNAL}
    assert validate_job("disease", "on_drift", drift_threshold=0.15, drift_signal="inputs").drift_signal == "inputs"
    assert drift.min_samples == get_spec("disease").min_samples, "min_samples defaults to the catalog's"
    assert validate_job("disease", "daily").schedule_time == DEFAULT_SCHEDULE_TIME


def test_a_bad_drift_signal_names_the_allowed_values() -> None:
    with pytest.raises(InvalidFieldError) as err:
        validate_job("disease", "on_drift", drift_threshold=0.15, drift_signal="labels")
    assert all(signal in str(err.value) for signal in DRIFT_SIGNALS)


def test_a_store_from_before_drift_signals_keeps_its_jobs_judging_by_accuracy(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    old = sa.create_engine(f"sqlite:///{path}")
    with old.begin() as conn:  # the previous release's table, with one on_drift and one weekly job
        conn.execute(sa.text(
            "CREATE TABLE jobs (job_id INTEGER PRIMARY KEY AUTOINCREMENT, model_type TEXT NOT NULL, "
            "schedule_type TEXT NOT NULL, schedule_day INTEGER, schedule_time TEXT, timezone TEXT NOT NULL, "
            "drift_threshold DOUBLE PRECISION, min_samples BIGINT NOT NULL, time_range TEXT NOT NULL, "
            "enabled INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL)"))
        conn.execute(sa.text("INSERT INTO jobs (model_type, schedule_type, timezone, drift_threshold, "
                             "min_samples, time_range, created_at) "
                             "VALUES ('disease', 'on_drift', 'UTC', 0.15, 50, 'last_30d', 'x')"))
        conn.execute(sa.text("INSERT INTO jobs (model_type, schedule_type, schedule_day, schedule_time, timezone, "
                             "min_samples, time_range, created_at) VALUES ('disease', 'weekly', 2, '03:00', 'UTC', "
                             "50, 'last_90d', 'x')"))
    old.dispose()
    store = JobStore(path)
    drift, weekly = store.list()
    assert drift.drift_signal == "accuracy" and drift.schedule_config["drift_signal"] == "accuracy"
    assert weekly.drift_signal is None and "drift_signal" not in weekly.schedule_config
    added = store.get(store.add(validate_job("disease", "on_drift", drift_threshold=0.2)))
    assert added.drift_signal == DEFAULT_DRIFT_SIGNAL
    assert [j.drift_signal for j in JobStore(path).list()] == ["accuracy", None, DEFAULT_DRIFT_SIGNAL]


def test_jobs_persist_with_integer_ids_and_unknown_removals_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    first = JobStore(path).add(validate_job("disease", "daily", schedule_time="02:00"))
    second = JobStore(path).add(validate_job("growth_stage", "monthly"))
    assert (first, second) == (1, 2)
    reopened = JobStore(path)
    assert [j.job_id for j in reopened.list()] == [1, 2]
    assert reopened.get(1).schedule_time == "02:00" and reopened.get(1).created_at
    with pytest.raises(InvalidFieldError) as err:
        reopened.remove(99)
    assert err.value.field == "job_id" and "1, 2" in str(err.value)
    reopened.remove(1)
    assert [j.job_id for j in reopened.list()] == [2]


def test_defaults_are_seeded_once_and_removals_stick(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    assert store.seed_defaults_once() is True
    seeded = store.list()
    assert len(seeded) == len(DEFAULT_JOBS)
    weekly = next(j for j in seeded if j.model_type == "climate_optimizer" and j.schedule_type == "weekly")
    assert (weekly.schedule_day, weekly.schedule_time) == (2, "03:00")
    assert any(j.schedule_type == "on_drift" and j.drift_threshold == 0.20 for j in seeded)
    for job in seeded:
        store.remove(job.job_id)
    assert store.seed_defaults_once() is False
    assert JobStore(tmp_path / "jobs.sqlite").list() == []
