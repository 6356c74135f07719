"""Automated ML retraining for plant-growing apps, on Dagster.

The public Python API (the spec's names) is importable from here:

    from retraining_pipelines import AutomatedRetrainingService, ModelStatus
    service = AutomatedRetrainingService()          # DAGSTER_HOME defaults
    service.add_job("climate_optimizer", "weekly", schedule_day=2, schedule_time="03:00", min_samples=100)
"""

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
