"""The version scheme and the promotion rule (pure functions, the spec's numbers)."""

from __future__ import annotations

import pytest

from retraining_pipelines.errors import InvalidFieldError
from retraining_pipelines.promotion import RetrainingResult, relative_improvement
from retraining_pipelines.versioning import FIRST_VERSION, bump_for_retrain, bump_version, parse_version


@pytest.mark.parametrize(
    ("old", "bump", "new"),
    [(None, "minor", "1.0.0"), ("1.2.0", "minor", "1.3.0"), ("1.2.0", "major", "2.0.0"),
     ("1.2.0", "patch", "1.2.1"), ("1.9.3", "minor", "1.10.0"), ("2.0.7", "major", "3.0.0")],
)
def test_bump_version(old: str | None, bump: str, new: str) -> None:
    assert bump_version(old, bump) == new  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["1.2", "v1.2.0", "1.2.0.0", "01.2.0", "a.b.c", "", None, "../1.0.0"])
def test_malformed_versions_are_refused(bad: object) -> None:
    with pytest.raises(InvalidFieldError, match="version"):
        parse_version(bad)  # type: ignore[arg-type]


def test_unknown_bump_type_is_refused() -> None:
    with pytest.raises(InvalidFieldError, match="bump_type"):
        bump_version("1.0.0", "huge")  # type: ignore[arg-type]


def test_retrain_is_minor_unless_the_schema_changed() -> None:
    assert FIRST_VERSION == "1.0.0"
    assert bump_for_retrain(None, "abc") == "minor"
    assert bump_for_retrain("abc", "abc") == "minor"
    assert bump_for_retrain("abc", "xyz") == "major"


def test_improvement_is_relative_percent_as_in_the_spec() -> None:
    assert round(relative_improvement(0.87, 0.91), 1) == 4.6
    assert relative_improvement(None, 0.9) is None
    assert relative_improvement(0.8, 0.8) == 0.0


def test_result_json_has_the_spec_fields() -> None:
    result = RetrainingResult("climate_optimizer", "1.2.0", "1.3.0", {"accuracy": 0.87}, {"accuracy": 0.91},
                              relative_improvement(0.87, 0.91), 1523, 45.2, promoted=True)
    out = result.to_dict()
    for key in ("model_type", "old_version", "new_version", "old_metrics", "new_metrics", "improvement",
                "training_samples", "training_duration"):
        assert key in out
    assert out["improvement"] == 4.6
