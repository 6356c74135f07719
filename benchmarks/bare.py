"""The bare-script baseline the benchmarks measure against: the same work as a retrain, no Dagster.

The project's own SQL, features, time split, estimator, metrics and `joblib.dump` - no Dagster, no
registry, no gate, no event log - so a ratio to it is what the orchestration costs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import joblib

from retraining_pipelines.catalog import get_spec
from retraining_pipelines.features import engineer_features
from retraining_pipelines.plantdb import PlantQueries
from retraining_pipelines.training import time_split, validate_model


def bare_retrains(store: PlantQueries, out: Path, model_types: Iterable[str], time_range: str = "last_90d") -> float:
    """Retrain `model_types` in sequence as a bare script would; returns the seconds it took."""
    started = time.perf_counter()
    for model_type in model_types:
        spec = get_spec(model_type)
        samples = store.training_samples(model_type, min_samples=1, time_range=time_range)
        split = time_split(engineer_features(samples))
        estimator = spec.build_estimator().fit(split.X_train, split.y_train)
        validate_model(estimator, split.X_holdout, split.y_holdout, spec)
        joblib.dump(estimator, out / f"{model_type}.joblib")
    return time.perf_counter() - started
