"""Automated ML retraining for plant-growing apps, on Dagster.

The public Python API (the spec's names) is importable from here:

    from retraining_pipelines import AutomatedRetrainingService, ModelStatus
    service = AutomatedRetrainingService()          # DAGSTER_HOME defaults
    service.add_job("climate_optimizer", "weekly", schedule_day=2, schedule_time="03:00", min_samples=100)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module that defines it. Imported on first use (PEP 562): `import
#: retraining_pipelines.catalog` (a bare script, a worker, the CLI's help) does not pay for Dagster,
#: the service and the generator; `from retraining_pipelines import X` works as before.
_PUBLIC = {
    "CATALOG": "catalog", "MODEL_TYPES": "catalog", "ModelSpec": "catalog", "get_spec": "catalog",
    "PlantDataStore": "datastore", "PlantDatabase": "plantdb",
    "DriftDetector": "drift", "DriftMetrics": "drift", "replay_predictions": "drift",
    "InsufficientSamplesError": "errors", "InvalidFieldError": "errors", "ModelIntegrityError": "errors",
    "RegistryError": "errors", "RetrainingError": "errors", "RetrainingSkipped": "errors",
    "FeatureSet": "features", "engineer_features": "features",
    "DriftScenario": "generator", "GeneratorConfig": "generator", "generate": "generator",
    "JobStore": "jobstore",
    "RetrainingResult": "promotion",
    "ModelMetadata": "registry", "ModelRegistry": "registry", "ModelStatus": "registry", "ModelVersion": "registry",
    "AutomatedRetrainingService": "service", "RetrainingJob": "service",
    "train_model": "training", "validate_model": "training",
    "bump_version": "versioning",
}


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'retraining_pipelines' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"retraining_pipelines.{module}"), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, eagerly
    from retraining_pipelines.catalog import CATALOG, MODEL_TYPES, ModelSpec, get_spec
    from retraining_pipelines.datastore import PlantDataStore
    from retraining_pipelines.drift import DriftDetector, DriftMetrics, replay_predictions
    from retraining_pipelines.errors import (
        InsufficientSamplesError,
        InvalidFieldError,
        ModelIntegrityError,
        RegistryError,
        RetrainingError,
        RetrainingSkipped,
    )
    from retraining_pipelines.features import FeatureSet, engineer_features
    from retraining_pipelines.generator import DriftScenario, GeneratorConfig, generate
    from retraining_pipelines.jobstore import JobStore
    from retraining_pipelines.plantdb import PlantDatabase
    from retraining_pipelines.promotion import RetrainingResult
    from retraining_pipelines.registry import ModelMetadata, ModelRegistry, ModelStatus, ModelVersion
    from retraining_pipelines.service import AutomatedRetrainingService, RetrainingJob
    from retraining_pipelines.training import train_model, validate_model
    from retraining_pipelines.versioning import bump_version

__all__ = [
    "CATALOG",
    "MODEL_TYPES",
    "AutomatedRetrainingService",
    "DriftDetector",
    "DriftMetrics",
    "DriftScenario",
    "FeatureSet",
    "GeneratorConfig",
    "InsufficientSamplesError",
    "InvalidFieldError",
    "JobStore",
    "ModelIntegrityError",
    "ModelMetadata",
    "ModelRegistry",
    "ModelSpec",
    "ModelStatus",
    "ModelVersion",
    "PlantDataStore",
    "PlantDatabase",
    "RegistryError",
    "RetrainingError",
    "RetrainingJob",
    "RetrainingResult",
    "RetrainingSkipped",
    "bump_version",
    "engineer_features",
    "generate",
    "get_spec",
    "replay_predictions",
    "train_model",
    "validate_model",
]
