"""The product document's Python examples, run as written, in the document's order.

Only the import line changes and the document's names are bound as the README's *Python API*
section shows (`SPEC_NAMES`). Each block is the document's text, unchanged apart from its
indentation; `logger` and `print` are the app's. The workflow internals of *Retraining Workflow*
(steps 1-7, which call the app's private helpers) are implemented by our assets and are not
public API, so they are not here; the README says so.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from retraining_pipelines import (
    AutomatedRetrainingService,
    DriftDetector,
    ModelStatus,
    PlantDataStore,
    bump_version,
    replay_predictions,
)
from retraining_pipelines.io_manager import ModelRegistryResource
from retraining_pipelines.jobstore import JobStore
from retraining_pipelines.settings import registry_dir

from .conftest import project_instance

#: (title in the document, code block exactly as the document prints it)
EXAMPLES: list[tuple[str, str]] = [
    ("Quick Start: scheduling retraining jobs", """
# Weekly retraining (Wednesdays at 3 AM)
retraining.add_job(
    model_type="climate_optimizer",
    schedule_type="weekly",
    schedule_day=2,  # 0=Monday, 6=Sunday
    schedule_time="03:00",
    min_samples=100
)

# Drift-triggered retraining
retraining.add_job(
    model_type="disease",
    schedule_type="on_drift",
    drift_threshold=0.15,  # Retrain if accuracy drops >15%
    min_samples=50
)
"""),
    ("API Reference: add_job()", """
# Daily retraining at 2 AM
job_id = retraining.add_job(
    model_type="climate_optimizer",
    schedule_type="daily",
    schedule_time="02:00",
    min_samples=100
)
print(f"Scheduled job {job_id}")
"""),
    ("API Reference: retrain_model()", """
result = retraining.retrain_model(
    model_type="climate_optimizer",
    force=True  # Retrain even if no drift detected
)

print(f"Retrained {result.model_type}: v{result.old_version} → v{result.new_version}")
print(f"Accuracy: {result.old_metrics['accuracy']:.2%} → {result.new_metrics['accuracy']:.2%}")
print(f"Improvement: {result.improvement:.1f}%")
print(f"Training time: {result.training_duration:.1f}s")
"""),
    ("API Reference: get_retraining_schedule()", """
jobs = retraining.get_retraining_schedule()

for job in jobs:
    print(f"[{job.job_id}] {job.model_type}: {job.schedule_type}")
    print(f"  Last run: {job.last_run}")
    print(f"  Next run: {job.next_run}")
"""),
    ("Job types: daily", """
retraining.add_job(
    model_type="disease",
    schedule_type="daily",
    schedule_time="03:00",  # 3 AM
    min_samples=50
)
"""),
    ("Job types: weekly", """
retraining.add_job(
    model_type="climate_optimizer",
    schedule_type="weekly",
    schedule_day=2,  # Wednesday
    schedule_time="03:00",
    min_samples=100
)
"""),
    ("Job types: monthly", """
retraining.add_job(
    model_type="personalized_growth",
    schedule_type="monthly",
    schedule_time="03:00",
    min_samples=200
)
"""),
    ("Job types: drift-triggered", """
retraining.add_job(
    model_type="climate_optimizer",
    schedule_type="on_drift",
    drift_threshold=0.15,  # Retrain if accuracy drops >15%
    min_samples=100
)
"""),
    ("API Reference: remove_job()", """
retraining.remove_job(job_id=5)
print("Retraining job removed")
"""),
    ("Best practices: start with weekly retraining", """
# Good default for production
retraining.add_job(
    model_type="climate_optimizer",
    schedule_type="weekly",
    schedule_day=2,  # Wednesday
    schedule_time="03:00",
    min_samples=100
)
"""),
    ("Best practices: combine scheduled + drift-triggered", """
# Scheduled retraining as baseline
retraining.add_job(
    model_type="climate_optimizer",
    schedule_type="weekly",
    schedule_day=2,
    schedule_time="03:00",
    min_samples=100
)

# Drift-triggered as safety net
retraining.add_job(
    model_type="climate_optimizer",
    schedule_type="on_drift",
    drift_threshold=0.20,  # Higher threshold to avoid duplicate retraining
    min_samples=100
)
"""),
    ("Model versioning: automatic bumping", """
assert _bump_version("1.2.0") == "1.3.0"
assert _bump_version("1.2.0", "major") == "2.0.0"
assert _bump_version("1.2.0", "patch") == "1.2.1"
"""),
    ("Rollback strategy", """
# Revert to previous version
old_version = model_registry.get_previous_version(model_type, current_version)

model_registry.set_model_status(model_type, current_version, ModelStatus.ARCHIVED)
model_registry.set_model_status(model_type, old_version, ModelStatus.ACTIVE)

logger.warning(f"Rolled back {model_type}: v{current_version} → v{old_version}")
"""),
    ("Integration: scheduled retraining (the body of the cron task)", """
retraining.check_and_execute_jobs()
"""),
    ("Integration: drift detection (the body of the daily task)", """
model_types = ["climate_optimizer", "disease", "irrigation_threshold"]

for model_type in model_types:
    # Check drift
    metrics = drift_detector.check_drift(
        model_type=model_type,
        recent_predictions=get_recent_predictions(model_type),
        recent_actuals=get_recent_actuals(model_type)
    )

    if metrics.requires_retraining:
        logger.info(f"Drift detected in {model_type} (drift: {metrics.accuracy_drift:.2%})")

        # Trigger retraining
        result = retraining.retrain_model(model_type=model_type, force=True)

        logger.info(f"Retrained {model_type}: accuracy {result.new_metrics['accuracy']:.2%}")
"""),
    ("Troubleshooting: compare metrics", """
result = retraining.retrain_model(model_type="climate_optimizer")

if result.improvement < -5:
    logger.error(f"Model degradation: {result.improvement:.1f}%")

    # Rollback to previous version
    model_registry.set_model_status(
        model_type="climate_optimizer",
        version=result.new_version,
        status=ModelStatus.ARCHIVED
    )
    model_registry.set_model_status(
        model_type="climate_optimizer",
        version=result.old_version,
        status=ModelStatus.ACTIVE
    )
"""),
    ("Troubleshooting: check available samples", """
training_data = training_data_repo.fetch_samples(
    model_type="climate_optimizer",
    time_range="last_90d"
)
print(f"Available samples: {len(training_data)}")
"""),
]


@pytest.fixture(scope="module")
def namespace(plant_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The document's names, bound as the README shows; one world for all examples, in order."""
    home = tmp_path_factory.mktemp("spec_home")
    with project_instance() as instance:
        # the README binds `AutomatedRetrainingService()`; here its stores are pinned to this module's world,
        # because every test gets its own DAGSTER_HOME
        retraining = AutomatedRetrainingService(
            instance=instance, plant_store=PlantDataStore(database_url=plant_db_url),
            job_store=JobStore(home / "jobs.db"),
            model_registry=ModelRegistryResource(registry_dir=str(home / "model_registry")))
        yield {
            "retraining": retraining,
            "model_registry": retraining.registry,
            "training_data_repo": retraining.plant_store,
            "ModelStatus": ModelStatus,
            "_bump_version": bump_version,
            "logger": logging.getLogger("plant_app"),
            "drift_detector": DriftDetector(retraining.registry, retraining.plant_store),
            "get_recent_predictions": lambda m: retraining.plant_store.recent_outcomes(m)[0],
            "get_recent_actuals": lambda m: retraining.plant_store.recent_outcomes(m)[1],
        }


def _served_twice(ns: dict[str, Any]) -> None:
    """The rollback example needs a model type with two served versions, as after a week in production."""
    ns["retraining"].retrain_model("disease", force=True, time_range="last_90d")
    registry = ns["model_registry"]
    registry.promote("disease", registry.register_model(
        "disease", registry.load_model("disease"), _metadata_like(registry, "disease")).version, reason="week 2")
    ns.update(model_type="disease", current_version=registry.get_active_version("disease"))


def _metadata_like(registry: Any, model_type: str) -> Any:
    from retraining_pipelines import ModelMetadata

    active = registry.get_version(model_type, registry.get_active_version(model_type))
    return ModelMetadata(model_type=model_type, feature_names=active.feature_names,
                         training_samples=active.training_samples, training_duration=active.training_duration,
                         performance_metrics=active.metrics)


@pytest.mark.parametrize("title,code", EXAMPLES, ids=[title for title, _ in EXAMPLES])
def test_the_spec_example_runs_as_written(namespace: dict[str, Any], title: str, code: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    if title == "Rollback strategy":
        _served_twice(namespace)
    if title.startswith("Integration: drift detection"):  # the plant app has logged outcomes by now
        replay_predictions(namespace["retraining"].plant_store, namespace["model_registry"], "disease")
    exec(compile(textwrap.dedent(code), title, "exec"), namespace)
    retraining = namespace["retraining"]
    out = capsys.readouterr().out
    if title == "API Reference: retrain_model()":
        assert "Retrained climate_optimizer: vNone → v1.0.0" in out and "Improvement: " in out
    if title.startswith("Integration: drift detection"):
        assert namespace["metrics"].model_type == "irrigation_threshold"  # the loop ran to its end
    if title == "Troubleshooting: compare metrics":
        assert namespace["result"].old_version == "1.0.0" and namespace["result"].improvement is not None
    if title == "API Reference: remove_job()":
        assert 5 not in [job.job_id for job in retraining.get_retraining_schedule()]
    if title == "Rollback strategy":
        registry = namespace["model_registry"]
        assert registry.get_active_version("disease") == namespace["old_version"] == "1.0.0"
        assert registry.get_version("disease", namespace["current_version"]).status == ModelStatus.ARCHIVED
    if title == "API Reference: get_retraining_schedule()":
        assert out.count("Next run: ") == len(retraining.get_retraining_schedule())
        drift_jobs = [j for j in retraining.get_retraining_schedule() if j.schedule_type == "on_drift"]
        assert drift_jobs[0].drift_threshold == 0.15


def test_the_spec_names_build_without_arguments() -> None:
    """`AutomatedRetrainingService()`, `DriftDetector()` and `PlantDataStore()` use the DAGSTER_HOME defaults."""
    assert DriftDetector().registry.root == AutomatedRetrainingService().registry.root == registry_dir()
    assert PlantDataStore().url == AutomatedRetrainingService().plant_store.url
