"""The model catalog: one coherent entry per model type."""

from __future__ import annotations

import dataclasses

import pytest

from retraining_pipelines.catalog import CATALOG, ESTIMATORS, MODEL_TYPES, Bound, QualityFloor, get_spec
from retraining_pipelines.errors import InvalidFieldError


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_entry_is_coherent(model_type: str) -> None:
    spec = get_spec(model_type)
    assert spec.model_type == model_type
    assert spec.feature_set == f"{model_type}_v1"
    assert len(set(spec.features)) == len(spec.features), "duplicate feature names"
    assert isinstance(spec.build_estimator(), ESTIMATORS[spec.estimator])
    assert spec.min_samples > 0
    if spec.task == "regression":
        assert spec.accuracy_tolerance and spec.accuracy_tolerance > 0
    bounds = spec.floor.all_of + spec.floor.any_of
    assert bounds, "every model needs an absolute quality floor"


def test_unknown_model_type_names_the_field_and_allowed_values() -> None:
    with pytest.raises(InvalidFieldError) as err:
        get_spec("tomato_predictor")
    message = str(err.value)
    assert "model_type" in message and "tomato_predictor" in message
    assert all(m in message for m in MODEL_TYPES)


@pytest.mark.parametrize("bad", [None, 3, "", "../../etc", "Disease"])
def test_non_catalog_values_are_refused(bad: object) -> None:
    with pytest.raises(InvalidFieldError):
        get_spec(bad)  # type: ignore[arg-type]


def test_schema_fingerprint_tracks_features_and_estimator_not_hyperparameters() -> None:
    spec = CATALOG["climate_optimizer"]
    retuned = dataclasses.replace(spec, hyperparameters={**spec.hyperparameters, "n_estimators": 7})
    fewer = dataclasses.replace(spec, features=spec.features[:-1])
    other = dataclasses.replace(spec, estimator="HistGradientBoostingClassifier")
    bumped = dataclasses.replace(spec, feature_set_version=2)
    assert retuned.schema_fingerprint == spec.schema_fingerprint
    assert len({spec.schema_fingerprint, fewer.schema_fingerprint, other.schema_fingerprint,
                bumped.schema_fingerprint}) == 4


def test_quality_floor_all_of_and_any_of() -> None:
    floor = QualityFloor(
        all_of=(Bound("mape", maximum=0.4),), any_of=(Bound("mae", maximum=4), Bound("r2", minimum=0.55))
    )
    assert floor.passes({"mape": 0.3, "mae": 5, "r2": 0.6})
    assert floor.passes({"mape": 0.3, "mae": 3, "r2": 0.1})
    assert not floor.passes({"mape": 0.3, "mae": 5, "r2": 0.5})
    assert not floor.passes({"mape": 0.5, "mae": 1, "r2": 0.9})
    assert not floor.passes({"mae": 1, "r2": 0.9}), "a missing metric never passes"
    assert floor.describe() == "mape <= 0.4 and (mae <= 4 or r2 >= 0.55)"
