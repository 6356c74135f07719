"""Automated ML retraining for plant-growing apps, on Dagster.

The public Python API is importable from here.
"""

from retraining_pipelines.catalog import CATALOG, MODEL_TYPES, ModelSpec, get_spec
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.errors import (
    InsufficientSamplesError,
    InvalidFieldError,
    ModelIntegrityError,
    RegistryError,
    RetrainingError,
)
from retraining_pipelines.features import FeatureSet, engineer_features
from retraining_pipelines.generator import DriftScenario, GeneratorConfig, generate
from retraining_pipelines.training import train_model, validate_model

__all__ = [
    "CATALOG",
    "MODEL_TYPES",
    "DriftScenario",
    "FeatureSet",
    "GeneratorConfig",
    "InsufficientSamplesError",
    "InvalidFieldError",
    "ModelIntegrityError",
    "ModelSpec",
    "PlantDataStore",
    "RegistryError",
    "RetrainingError",
    "engineer_features",
    "generate",
    "get_spec",
    "train_model",
    "validate_model",
]
