"""The promotion rule (`promotion.decide`) as a table, and the gate's fairness and ownership end to end."""

from __future__ import annotations

import pytest

from retraining_pipelines.catalog import get_spec
from retraining_pipelines.promotion import ROLLBACK_TOLERANCE_PCT, Comparison, decide

DISEASE = get_spec("disease")  # floor: accuracy >= 0.55
BASELINE = {"accuracy": 0.40}


def _vs(champion: float, candidate: float, version: str = "1.0.0") -> Comparison:
    return Comparison(version, {"accuracy": champion}, {"accuracy": candidate}, "fair hold-out", 100)


FIRST = Comparison(None, None, {"accuracy": 0.0}, "none")

# (candidate's whole-hold-out accuracy, comparison, candidate version) -> promoted?, words in the reason
RULES = [
    (0.80, FIRST, "1.0.0", True, "first version"),
    (0.50, FIRST, "1.0.0", False, "below the quality floor"),
    (0.38, FIRST, "1.0.0", False, "quality floor"),
    (0.80, _vs(0.80, 0.77), "1.1.0", True, "-3.8 %"),  # within the spec's 5 %
    (0.80, _vs(0.80, 0.75), "1.1.0", False, "% worse (limit 5 %)"),
    (0.80, _vs(0.70, 0.90), "1.1.0", True, "+28.6 %"),
    # the README's drift demo: both below the floor, the candidate far better -> serve the better
    (0.415, _vs(0.271, 0.415), "1.1.0", True, "serving the better of two weak models"),
    # below the floor while the champion meets it on the same rows -> keep the champion
    (0.50, _vs(0.60, 0.61), "1.1.0", False, "which v1.0.0 meets"),
    # both weak, the candidate worse beyond the tolerance -> keep the champion
    (0.30, _vs(0.40, 0.30), "1.1.0", False, "25.0 % worse"),
    # a slower parallel run finishing after a newer version went live
    (0.90, _vs(0.70, 0.90, version="1.6.0"), "1.5.0", False, "superseded"),
]


@pytest.mark.parametrize(("accuracy", "comparison", "version", "promoted", "words"), RULES)
def test_the_promotion_rule(accuracy: float, comparison: Comparison, version: str, promoted: bool, words: str) -> None:
    decision = decide(DISEASE, {"accuracy": accuracy}, comparison, BASELINE, version)
    assert decision.promote is promoted and words in decision.reason, decision.reason
    assert bool(decision.warnings) == ("weak models" in decision.reason)


def test_a_first_version_must_beat_its_naive_baseline() -> None:
    # the case: disease v1.0.0 passed the 0.55 floor at 0.6295 but the baseline scored 0.6627
    decision = decide(DISEASE, {"accuracy": 0.6295}, FIRST, {"accuracy": 0.6627}, "1.0.0")
    assert not decision.promote and "does not beat the naive baseline" in decision.reason


def test_a_first_version_below_a_compound_floor_is_rejected() -> None:
    spec = get_spec("irrigation_duration")  # MAE <= 25 s and MAPE <= 0.40
    decision = decide(spec, {"accuracy": 0.9, "mae": 40.0, "mape": 0.2}, FIRST, {"accuracy": 0.1}, "1.0.0")
    assert not decision.promote and "quality floor" in decision.reason


def test_the_tolerance_is_the_spec_s_five_percent_and_configurable() -> None:
    assert ROLLBACK_TOLERANCE_PCT == 5.0
    assert decide(DISEASE, {"accuracy": 0.8}, _vs(0.80, 0.75), BASELINE, "1.1.0", tolerance_pct=10).promote
