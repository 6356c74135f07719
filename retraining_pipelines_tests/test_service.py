"""`AutomatedRetrainingService`: the spec's Python API, on a real instance and real training."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from retraining_pipelines import (
    AutomatedRetrainingService,
    InsufficientSamplesError,
    InvalidFieldError,
    RetrainingResult,
    RetrainingSkipped,
    replay_predictions,
)
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.jobstore import DEFAULT_JOBS, JobStore
from retraining_pipelines.runs import PARTITION_TAG, RETRAIN_JOB
from retraining_pipelines.settings import registry_dir


@pytest.fixture
def service(plant_store: PlantDataStore, instance: dg.DagsterInstance, isolated_dagster_home: Path):
    return AutomatedRetrainingService(plant_store=plant_store, instance=instance)


def test_no_argument_service_uses_dagster_home_defaults(isolated_dagster_home: Path) -> None:
    service = AutomatedRetrainingService()
    assert service.jobs.path == isolated_dagster_home / "retraining_jobs.sqlite"
    assert service.registry.root == registry_dir() == isolated_dagster_home / "model_registry"
    assert service.plant_store.url.endswith(str(isolated_dagster_home / "plant_data.sqlite"))
    assert service.get_retraining_schedule() == []


def test_add_list_and_remove_jobs_in_the_spec_shape(service: AutomatedRetrainingService) -> None:
    weekly = service.add_job(model_type="climate_optimizer", schedule_type="weekly", schedule_day=2,
                             schedule_time="03:00", min_samples=100)
    drift = service.add_job(model_type="disease", schedule_type="on_drift", drift_threshold=0.15, min_samples=50)
    assert isinstance(weekly, int) and drift == weekly + 1
    jobs = {j.job_id: j for j in service.get_retraining_schedule(now=datetime(2026, 2, 12, 12, tzinfo=UTC))}
    shown = jobs[weekly].to_dict()
    assert shown["schedule_config"] == {"day": 2, "time": "03:00", "timezone": "UTC"}
    assert shown["next_run"] == "2026-02-18T03:00:00Z" and shown["last_run"] is None
    assert jobs[drift].to_dict()["schedule_config"] == {"drift_threshold": 0.15, "drift_signal": "accuracy"}
    assert jobs[drift].next_run is None
    service.remove_job(weekly)
    assert [j.job_id for j in service.get_retraining_schedule()] == [drift]


@pytest.mark.parametrize("bad_id", [999, "1", None, True])
def test_removing_an_unknown_job_is_refused(service: AutomatedRetrainingService, bad_id: object) -> None:
    service.add_job("disease", "daily")
    with pytest.raises(InvalidFieldError, match="job_id"):
        service.remove_job(bad_id)  # type: ignore[arg-type]
    assert len(service.get_retraining_schedule()) == 1


def test_an_invalid_job_is_not_stored(service: AutomatedRetrainingService) -> None:
    with pytest.raises(InvalidFieldError, match=r"schedule_day.*0 = Monday"):
        service.add_job("climate_optimizer", "weekly", schedule_time="03:00")
    assert service.get_retraining_schedule() == []


def test_retrain_model_returns_the_spec_result(service: AutomatedRetrainingService) -> None:
    first = service.retrain_model("irrigation_duration", force=True)
    second = service.retrain_model("irrigation_duration", force=True)
    assert isinstance(second, RetrainingResult)
    assert (first.new_version, second.old_version, second.new_version) == ("1.0.0", "1.0.0", "1.1.0")
    assert second.promoted and second.old_metrics["accuracy"] == pytest.approx(first.new_metrics["accuracy"])
    assert second.improvement == pytest.approx(0.0, abs=1e-9)
    assert second.training_samples > 0 and second.training_duration > 0
    runs = service.instance.get_runs()
    assert runs[0].job_name == RETRAIN_JOB and runs[0].tags[PARTITION_TAG] == "irrigation_duration"


def test_retrain_without_force_leaves_a_stable_model_alone(service: AutomatedRetrainingService) -> None:
    assert service.retrain_model("disease").new_version == "1.0.0", "no predictions yet: no verdict, so retrain"
    replay_predictions(service.plant_store, service.registry, "disease", "last_14d")
    assert service.check_drift("disease").status == "stable"
    with pytest.raises(RetrainingSkipped, match=r"No drift detected for disease.*threshold 0\.15 "):
        service.retrain_model("disease")
    assert service.registry.get_latest_version("disease") == "1.0.0"
    service.add_job("disease", "on_drift", drift_threshold=0.37, min_samples=50)
    with pytest.raises(RetrainingSkipped, match=r"threshold 0\.37 "):
        service.retrain_model("disease")  # the model's own on_drift job decides what counts as drift


def test_insufficient_samples_run_nothing(service: AutomatedRetrainingService) -> None:
    with pytest.raises(InsufficientSamplesError, match=r"Insufficient samples: \d+ < 1000000 for disease"):
        service.retrain_model("disease", force=True, min_samples=1_000_000)
    with pytest.raises(InvalidFieldError, match="time_range"):
        service.retrain_model("disease", force=True, time_range="yesterday")
    with pytest.raises(InvalidFieldError, match="model_type"):
        service.retrain_model("tomato", force=True)
    assert service.instance.get_runs() == []


def test_check_and_execute_jobs_runs_what_is_due(service: AutomatedRetrainingService) -> None:
    job_id = service.add_job("growth_stage", "daily", schedule_time="03:00")
    service.add_job("disease", "monthly", schedule_time="03:00")
    now = datetime.now(UTC)
    assert all(e.skipped and "not due" in e.skipped for e in service.check_and_execute_jobs(now=now))
    later = now + timedelta(days=1, hours=1)  # a daily 03:00 has passed since the job was added
    done = {e.job_id: e for e in service.check_and_execute_jobs(now=later) if e.trigger == "scheduled"}
    assert done[job_id].result is not None and done[job_id].result.promoted
    listed = {j.job_id: j for j in service.get_retraining_schedule()}[job_id]
    assert listed.last_outcome == "promoted" and listed.last_run is not None
    assert service.registry.get_version("growth_stage", "1.0.0").trigger == "scheduled"


def test_rollback_through_the_service(service: AutomatedRetrainingService) -> None:
    for _ in range(2):
        service.retrain_model("growth_stage", force=True)
    assert service.rollback("growth_stage", reason="stage labels looked wrong") == ("1.1.0", "1.0.0")
    assert service.notifier.read_log()[-1]["type"] == "model_rolled_back"


def test_first_start_seeds_the_recommended_jobs(isolated_dagster_home: Path) -> None:
    from retraining_pipelines.code_location import build_definitions

    defs = build_definitions()
    assert len(JobStore().list()) == len(DEFAULT_JOBS)
    names = {s.name for s in defs.schedules}
    assert "retrain_climate_optimizer_weekly_job1" in names
