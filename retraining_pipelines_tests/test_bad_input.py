"""Every bad input the issue found (and its siblings): one documented error, nothing changed.

Each case is called on a real service with real stores: a job store holding one job, a registry
holding an active and an archived version of a real (tiny) scikit-learn model. After the refused
call, a snapshot of everything the service persists must be byte-for-byte what it was before.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sklearn.dummy import DummyClassifier

from retraining_pipelines import (
    AutomatedRetrainingService,
    DriftDetector,
    InvalidFieldError,
    ModelMetadata,
    ModelRegistry,
    RetrainingError,
)
from retraining_pipelines.cli import main
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.io_manager import ModelRegistryResource

MODEL = "disease"


def _metadata(**overrides: Any) -> ModelMetadata:
    fields: dict[str, Any] = {"model_type": MODEL, "feature_names": ["temperature"], "training_samples": 60,
                              "training_duration": 0.1, "performance_metrics": {"accuracy": 0.8}}
    return ModelMetadata(**{**fields, **overrides})


def _tiny_model() -> DummyClassifier:
    return DummyClassifier(strategy="most_frequent").fit([[0.0], [1.0]], ["healthy", "healthy"])


@pytest.fixture
def service(plant_store: PlantDataStore, instance: dg.DagsterInstance, tmp_path: Path) -> AutomatedRetrainingService:
    """A service with one job and two served versions (1.1.0 active, 1.0.0 archived)."""
    svc = AutomatedRetrainingService(plant_store=plant_store, instance=instance,
                                     model_registry=ModelRegistryResource(registry_dir=str(tmp_path / "registry")))
    svc.add_job(MODEL, "daily")
    for _ in range(2):
        record = svc.registry.register_model(MODEL, _tiny_model(), _metadata())
        svc.registry.promote(MODEL, record.version, reason="test")
    return svc


def snapshot(svc: AutomatedRetrainingService) -> dict[str, Any]:
    """Everything the service persists: jobs, versions, audit trail and every file under the registry."""
    files = {str(p.relative_to(svc.registry.root)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(svc.registry.root.rglob("*")) if p.is_file() and "registry.sqlite" not in p.name}
    dirs = sorted(str(p.relative_to(svc.registry.root)) for p in svc.registry.root.rglob("*") if p.is_dir())
    return {"jobs": [j.to_dict() for j in svc.jobs.list()],
            "versions": [v.to_dict() for v in svc.registry.list_versions()],
            "audit": svc.registry.audit_trail(), "files": files, "dirs": dirs,
            "runs": len(svc.instance.get_run_records())}


NAIVE = datetime(2026, 3, 1, 12)
HUGE = 10**30
#: (case id, call, the field the error must name). Every call must raise InvalidFieldError.
API_CASES: list[tuple[str, Callable[[AutomatedRetrainingService], Any], str]] = [
    ("huge min_samples", lambda s: s.add_job(MODEL, "daily", min_samples=HUGE), "min_samples"),
    ("min_samples float", lambda s: s.add_job(MODEL, "daily", min_samples=50.0), "min_samples"),
    ("zone directory", lambda s: s.add_job(MODEL, "daily", timezone="America"), "timezone"),
    ("zone path escape", lambda s: s.add_job(MODEL, "daily", timezone="../../etc/passwd"), "timezone"),
    ("time with newline", lambda s: s.add_job(MODEL, "daily", schedule_time="03:00\n"), "schedule_time"),
    ("range with newline", lambda s: s.add_job(MODEL, "daily", time_range="last_90d\n"), "time_range"),
    ("threshold NaN", lambda s: s.add_job(MODEL, "on_drift", drift_threshold=math.nan), "drift_threshold"),
    ("threshold inf", lambda s: s.add_job(MODEL, "on_drift", drift_threshold=math.inf), "drift_threshold"),
    ("model type case", lambda s: s.add_job("Disease", "daily"), "model_type"),
    ("model type list", lambda s: s.add_job([MODEL], "daily"), "model_type"),
    ("huge job id", lambda s: s.remove_job(HUGE), "job_id"),
    ("negative job id", lambda s: s.remove_job(-1), "job_id"),
    ("naive now", lambda s: s.get_retraining_schedule(now=NAIVE), "now"),
    ("text now", lambda s: s.get_retraining_schedule(now="2026-03-01"), "now"),
    ("naive now (due jobs)", lambda s: s.check_and_execute_jobs(now=NAIVE), "now"),
    ("force as text", lambda s: s.retrain_model(MODEL, force="false"), "force"),
    ("retrain huge min_samples", lambda s: s.retrain_model(MODEL, force=True, min_samples=HUGE), "min_samples"),
    ("retrain range newline", lambda s: s.retrain_model(MODEL, force=True, time_range="last_9d\n"), "time_range"),
    ("retrain unknown model", lambda s: s.retrain_model("durian", force=True), "model_type"),
    ("rollback empty version", lambda s: s.rollback(MODEL, to_version=""), "to_version"),
    ("rollback short version", lambda s: s.rollback(MODEL, to_version="1.0"), "to_version"),
    ("rollback version newline", lambda s: s.rollback(MODEL, to_version="1.0.0\n"), "to_version"),
    ("rollback reason None", lambda s: s.rollback(MODEL, reason=None), "reason"),
    ("rollback reason empty", lambda s: s.rollback(MODEL, reason="  "), "reason"),
    ("drift threshold negative", lambda s: s.check_drift(MODEL, threshold=-1), "threshold"),
    ("drift threshold NaN", lambda s: s.check_drift(MODEL, threshold=math.nan), "threshold"),
    ("drift threshold > 1", lambda s: s.check_drift(MODEL, threshold=2), "threshold"),
    ("drift window newline", lambda s: s.check_drift(MODEL, window="last_7d\n"), "window"),
    ("registry huge samples", lambda s: s.registry.register_model(MODEL, _tiny_model(),
                                                                   _metadata(training_samples=10**20)),
     "training_samples"),
    ("registry NaN duration", lambda s: s.registry.register_model(MODEL, _tiny_model(),
                                                                   _metadata(training_duration=math.nan)),
     "training_duration"),
    ("registry text metric", lambda s: s.registry.register_model(
        MODEL, _tiny_model(), _metadata(performance_metrics={"accuracy": "high"})), "performance_metrics"),
    ("registry seen before trained", lambda s: s.registry.register_model(
        MODEL, _tiny_model(), _metadata(train_start_ts=100, train_end_ts=200, seen_until_ts=150)), "seen_until_ts"),
    ("registry reason None", lambda s: s.registry.promote(MODEL, "1.0.0", reason=None), "reason"),
    ("registry version newline", lambda s: s.registry.get_version(MODEL, "1.0.0\n"), "version"),
    ("status set reason None", lambda s: s.registry.set_model_status(MODEL, "1.0.0", "archived", reason=None),
     "reason"),
]


@pytest.mark.parametrize("call,field", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_bad_api_input_is_refused_naming_the_field_and_changes_nothing(
    service: AutomatedRetrainingService, call: Callable[[AutomatedRetrainingService], Any], field: str
) -> None:
    before = snapshot(service)
    with pytest.raises(InvalidFieldError) as refused:
        call(service)
    assert refused.value.field == field
    assert f"Invalid {field}:" in str(refused.value) and "Allowed:" in str(refused.value)
    assert snapshot(service) == before


@pytest.mark.parametrize("root", ["", "  ", None, "a\x00b"], ids=["empty", "blank", "none", "nul"])
def test_a_registry_needs_a_directory(root: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    with pytest.raises(InvalidFieldError, match="root"):
        ModelRegistry(root)  # type: ignore[arg-type]
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("threshold", [-1, 0, 1, math.nan, "0.1", True])
def test_a_drift_detector_needs_a_threshold_between_0_and_1(tmp_path: Path, threshold: object) -> None:
    with pytest.raises(InvalidFieldError, match="threshold"):
        DriftDetector(ModelRegistry(tmp_path / "r"), threshold=threshold)  # type: ignore[arg-type]


CLI_CASES = [
    (["seed-demo", "--days", "0"], "days"),
    (["seed-demo", "--days", "-5"], "days"),
    (["seed-demo", "--days", "36500"], "days"),
    (["seed-demo", "--units", "0"], "units"),
    (["seed-demo", "--units", "-1"], "units"),
    (["seed-demo", "--drift", "heat_wave", "--drift-magnitude", "nan"], "drift_magnitude"),
    (["seed-demo", "--drift", "heat_wave", "--drift-magnitude", "-1"], "drift_magnitude"),
    (["seed-demo", "--drift", "heat_wave", "--drift-days-ago", "nan"], "drift_days_ago"),
    (["seed-demo", "--drift", "heat_wave", "--drift-days-ago", "400"], "drift_days_ago"),
    (["jobs", "add", MODEL, "weekly", "--day", "9"], "schedule_day"),
    (["jobs", "add", MODEL, "daily", "--time", "25:00"], "schedule_time"),
    (["jobs", "add", MODEL, "daily", "--timezone", "America"], "timezone"),
    (["jobs", "add", MODEL, "daily", "--min-samples", str(HUGE)], "min_samples"),
    (["jobs", "remove", str(HUGE)], "job_id"),
    (["replay-predictions", "durian"], "model_type"),
    (["replay-predictions", MODEL, "--time-range", "last_7"], "time_range"),
]


@pytest.mark.parametrize("argv,field", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_bad_cli_input_exits_2_with_a_one_line_reason_and_writes_nothing(
    argv: list[str], field: str, isolated_dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.name for p in isolated_dagster_home.rglob("*"))
    if argv[0] == "jobs":
        argv = [*argv, "--webserver", "http://127.0.0.1:9"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Invalid ") and field in err and "Allowed:" in err and "\n" not in err
    after = [p for p in isolated_dagster_home.rglob("*") if p.name not in before]
    assert not [p for p in after if p.suffix not in (".sqlite", ".sqlite-wal", ".sqlite-shm")], after


def test_a_bad_run_config_fails_the_run_at_its_first_step_naming_the_field(
    plant_store: PlantDataStore, instance: dg.DagsterInstance
) -> None:
    from .helpers import failure_messages, retrain

    for config, field in (({"time_range": "last_90d\n"}, "time_range"), ({"min_samples": HUGE}, "min_samples"),
                          ({"as_of": "yesterday"}, "as_of"), ({"min_samples": 0}, "min_samples")):
        result = retrain(MODEL, plant_store, instance, samples_config=config)
        assert not result.success
        message = "\n".join(failure_messages(result))
        assert f"Invalid {field}" in message and "Allowed:" in message, message
    assert ModelRegistryResource().get().list_versions(MODEL) == []


def test_refused_calls_still_leave_a_working_service(service: AutomatedRetrainingService) -> None:
    """The refusals above are not a locked-up state: valid calls right after them work."""
    with pytest.raises(InvalidFieldError):
        service.rollback(MODEL, to_version="")
    assert service.rollback(MODEL) == ("1.1.0", "1.0.0")
    with pytest.raises(RetrainingError):
        service.rollback(MODEL, to_version="9.9.9")
    assert service.registry.get_active_version(MODEL) == "1.0.0"
    assert service.get_retraining_schedule(now=datetime(2026, 3, 1, tzinfo=UTC))[0].model_type == MODEL
