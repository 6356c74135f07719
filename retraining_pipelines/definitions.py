"""Everything Dagster loads: `workspace.yaml` and `[tool.dagster]` both point here."""

import dagster as dg

from retraining_pipelines.assets import RETRAIN_ASSETS, retrain_model_job
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.io_manager import ModelRegistryIOManager, ModelRegistryResource
from retraining_pipelines.notifications import Notifier, retrain_failure_notifier
from retraining_pipelines.rollback import rollback_model_job


def build_definitions() -> dg.Definitions:
    """Build the code location; a function so tests can build it against their own home."""
    model_registry = ModelRegistryResource()
    return dg.Definitions(
        assets=RETRAIN_ASSETS,
        jobs=[retrain_model_job, rollback_model_job],
        sensors=[retrain_failure_notifier],
        resources={
            "plant_store": PlantDataStore(),
            "model_registry": model_registry,
            "model_io_manager": ModelRegistryIOManager(model_registry=model_registry),
            "notifier": Notifier(),
        },
    )


defs = build_definitions()
