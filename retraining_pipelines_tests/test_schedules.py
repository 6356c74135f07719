"""The cron rule, next runs, and schedules built from the job store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster._utils.schedules import cron_string_iterator

from retraining_pipelines.code_location import build_definitions
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.jobstore import JOB_ID_TAG, JobStore, validate_job
from retraining_pipelines.registry import TRIGGER_TAG
from retraining_pipelines.runs import RETRAIN_JOB
from retraining_pipelines.schedules import build_schedule, cron_for, next_run, previous_run, schedule_name

from .helpers import pipeline_resources

# (type, day, time, timezone, now) -> (cron, next run in UTC)
CASES = [
    ("daily", None, "02:00", "UTC", "2026-11-26T01:59:00", "0 2 * * *", "2026-11-26T02:00:00"),
    ("daily", None, "02:00", "UTC", "2026-11-26T02:00:00", "0 2 * * *", "2026-11-27T02:00:00"),
    ("daily", None, "23:59", "UTC", "2026-12-31T23:59:30", "59 23 * * *", "2027-01-01T23:59:00"),
    ("weekly", 0, "03:00", "UTC", "2026-11-26T12:00:00", "0 3 * * 1", "2026-11-30T03:00:00"),  # Monday
    ("weekly", 2, "03:00", "UTC", "2026-11-26T12:00:00", "0 3 * * 3", "2026-12-02T03:00:00"),  # Wednesday
    ("weekly", 6, "23:59", "UTC", "2026-11-26T12:00:00", "59 23 * * 0", "2026-11-29T23:59:00"),  # Sunday
    ("weekly", 3, "03:00", "UTC", "2026-11-26T02:00:00", "0 3 * * 4", "2026-11-26T03:00:00"),  # today, later
    ("monthly", None, "03:00", "UTC", "2026-11-26T12:00:00", "0 3 1 * *", "2026-12-01T03:00:00"),
    ("monthly", None, "00:00", "UTC", "2026-12-31T23:00:00", "0 0 1 * *", "2027-01-01T00:00:00"),
    ("monthly", None, "03:00", "UTC", "2027-02-28T12:00:00", "0 3 1 * *", "2027-03-01T03:00:00"),  # month end
    ("daily", None, "03:00", "Europe/Madrid", "2026-11-26T12:00:00", "0 3 * * *", "2026-11-27T02:00:00"),  # UTC+1
    ("daily", None, "03:00", "Europe/Madrid", "2026-07-01T12:00:00", "0 3 * * *", "2026-07-02T01:00:00"),  # UTC+2
    ("weekly", 6, "22:30", "America/New_York", "2026-11-28T12:00:00", "30 22 * * 0", "2026-11-30T03:30:00"),
]


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("kind", "day", "at", "tz", "now", "cron", "expected"), CASES)
def test_cron_and_next_run(kind: str, day: int | None, at: str, tz: str, now: str, cron: str, expected: str) -> None:
    job = validate_job("disease", kind, schedule_day=day, schedule_time=at, timezone=tz)
    assert cron_for(job) == cron
    assert next_run(job, _utc(now)) == _utc(expected)
    dagster_next = next(cron_string_iterator(_utc(now).timestamp() + 1e-3, cron, tz))
    assert dagster_next.astimezone(UTC) == _utc(expected), "Dagster's own cron evaluation agrees"


def test_a_wednesday_job_next_runs_on_a_wednesday_at_three() -> None:
    job = validate_job("climate_optimizer", "weekly", schedule_day=2, schedule_time="03:00")
    when = next_run(job, _utc("2026-11-26T12:00:00"))
    assert when.strftime("%A %H:%M") == "Wednesday 03:00"
    assert previous_run(job, when) == when
    assert previous_run(job, _utc("2026-11-26T12:00:00")) == _utc("2026-11-25T03:00:00")


def test_on_drift_jobs_have_no_next_run() -> None:
    assert next_run(validate_job("disease", "on_drift", drift_threshold=0.1)) is None


def _stored(tmp_path: Path, **kwargs: object):
    store = JobStore(tmp_path / "jobs.sqlite")
    return store.get(store.add(validate_job(**kwargs))), store


def test_a_schedule_tick_requests_exactly_one_run_for_its_partition(tmp_path: Path, plant_store: PlantDataStore,
                                                                     instance: dg.DagsterInstance) -> None:
    job, store = _stored(tmp_path, model_type="growth_stage", schedule_type="weekly", schedule_day=6,
                         schedule_time="03:30", min_samples=100)
    defs = build_definitions(job_store=store, resources=pipeline_resources(plant_store))
    schedule = defs.resolve_schedule_def(schedule_name(job))
    assert schedule.name == f"retrain_growth_stage_weekly_job{job.job_id}"
    assert schedule.cron_schedule == "30 3 * * 0"
    tick = _utc("2026-11-29T03:30:00")
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick,
                                   resources={"plant_store": plant_store},
                                   repository_def=defs.get_repository_def()) as context:
        requests = schedule.evaluate_tick(context).run_requests
    assert len(requests) == 1
    request = requests[0]
    assert request.partition_key == "growth_stage"
    assert request.run_key == f"{schedule.name}:{tick.isoformat()}"
    assert request.tags[TRIGGER_TAG] == "scheduled" and request.tags[JOB_ID_TAG] == str(job.job_id)
    assert request.run_config["ops"]["training_samples"]["config"]["min_samples"] == 100


def test_a_tick_without_enough_samples_is_skipped_with_the_reason(tmp_path: Path, plant_store: PlantDataStore,
                                                                  instance: dg.DagsterInstance) -> None:
    job, _ = _stored(tmp_path, model_type="disease", schedule_type="daily", min_samples=10**6)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=_utc("2026-11-26T03:00:00"),
                                   resources={"plant_store": plant_store}) as context:
        result = build_schedule(job).evaluate_tick(context)
    assert result.run_requests == []
    available = plant_store.count_samples("disease")
    assert result.skip_message == f"Insufficient samples: {available} < 1000000 for disease in last_90d"


def test_definitions_have_one_schedule_per_scheduled_job(tmp_path: Path, plant_store: PlantDataStore) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    ids = [store.add(validate_job("disease", "daily")), store.add(validate_job("disease", "monthly")),
           store.add(validate_job("disease", "on_drift", drift_threshold=0.2))]
    defs = build_definitions(job_store=store, resources=pipeline_resources(plant_store))
    names = sorted(s.name for s in defs.schedules)
    assert names == [f"retrain_disease_daily_job{ids[0]}", f"retrain_disease_monthly_job{ids[1]}"]
    assert {s.name for s in defs.sensors} == {"drift_sensor", "retrain_failure_notifier", "run_health_sensor"}
    schedule = defs.resolve_schedule_def(names[0])
    assert schedule.job_name == RETRAIN_JOB and schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_enable_automated_retraining_starts_schedules_and_drift_sensor(
    tmp_path: Path, plant_store: PlantDataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENABLE_AUTOMATED_RETRAINING", "true")
    store = JobStore(tmp_path / "jobs.sqlite")
    store.add(validate_job("disease", "daily"))
    defs = build_definitions(job_store=store, resources=pipeline_resources(plant_store))
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in defs.schedules)
    assert defs.resolve_sensor_def("drift_sensor").default_status == dg.DefaultSensorStatus.RUNNING
