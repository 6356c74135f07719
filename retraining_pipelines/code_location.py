"""How the code location is built, without building it (importing this has no side effects).

Schedules are built from the job store at load time (so adding or removing a job means reloading
this code location); the job store is seeded with the spec's recommended jobs on first start.
"""

from typing import Any

import dagster as dg

from retraining_pipelines.assets import RETRAIN_ASSETS, retrain_model_job
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.io_manager import ModelRegistryIOManager, ModelRegistryResource, RunScopedPickleIOManager
from retraining_pipelines.jobstore import JobStore
from retraining_pipelines.notifications import Notifier, retrain_failure_notifier
from retraining_pipelines.rollback import rollback_model_job
from retraining_pipelines.runs import run_health_sensor
from retraining_pipelines.schedules import build_drift_sensor, build_schedules


def default_resources(plant_store: PlantDataStore | None = None, model_registry: ModelRegistryResource | None = None,
                      notifier: Notifier | None = None) -> dict[str, Any]:
    """The one resource factory: the code location, the service and the tests all build theirs here."""
    model_registry = model_registry or ModelRegistryResource()
    return {
        "plant_store": plant_store or PlantDataStore(),
        "model_registry": model_registry,
        "model_io_manager": ModelRegistryIOManager(model_registry=model_registry),
        "io_manager": RunScopedPickleIOManager(),
        "notifier": notifier or Notifier(),
    }


def build_definitions(job_store: JobStore | None = None, resources: dict[str, Any] | None = None) -> dg.Definitions:
    """Build the code location from the job store; tests and the service pass their own."""
    if job_store is None:
        job_store = JobStore()
        job_store.seed_defaults_once()
    return dg.Definitions(
        assets=RETRAIN_ASSETS,
        jobs=[retrain_model_job, rollback_model_job],
        schedules=build_schedules(job_store.list()),
        sensors=[build_drift_sensor(job_store), retrain_failure_notifier, run_health_sensor],
        resources=resources or default_resources(),
        # The UI's Materialize button and backfills use this too: a fresh Python per step costs more
        # than training on a Pi-class machine, and run health relies on one process per run.
        executor=dg.in_process_executor,
    )

