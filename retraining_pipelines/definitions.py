"""Everything Dagster loads: `workspace.yaml` and `[tool.dagster]` both point here."""

from __future__ import annotations

import dagster as dg

from retraining_pipelines.assets import RETRAIN_ASSETS, retrain_model_job
from retraining_pipelines.datastore import PlantDataStore


def build_definitions() -> dg.Definitions:
    """Build the code location; a function so tests can build it against their own home."""
    return dg.Definitions(
        assets=RETRAIN_ASSETS,
        jobs=[retrain_model_job],
        resources={"plant_store": PlantDataStore()},
    )


defs = build_definitions()
