"""The promotion rule (`promotion.decide`) as a table, and the gate's fairness and ownership end to end."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from retraining_pipelines import io_manager
from retraining_pipelines.assets import ATTEMPT_TAG, FOLLOW_UP, LIVE_ACCURACY_TAG, RETRAIN_ASSETS
from retraining_pipelines.catalog import get_spec
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.errors import RegistryError
from retraining_pipelines.features import engineer_features
from retraining_pipelines.io_manager import ModelRegistryResource
from retraining_pipelines.promotion import (
    FOLLOW_UP_ALPHA,
    MIN_FAIR_ROWS,
    ROLLBACK_TOLERANCE_PCT,
    Comparison,
    decide,
    run_gate,
)
from retraining_pipelines.registry import ModelMetadata, ModelRegistry, ModelStatus, ModelVersion
from retraining_pipelines.training import (
    RULE_LEAVES,
    TimeSplit,
    accuracy_of,
    best_single_feature,
    predict,
    single_feature_rules,
    time_split,
    train_model,
)
from retraining_pipelines.versioning import parse_version

from . import retrain_worker
from .helpers import metadata_of, pipeline_resources, retrain

MODEL = "disease"
ROOT = Path(__file__).resolve().parent.parent

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


def test_a_one_row_shortfall_is_still_refused_and_says_how_sure_it_was() -> None:
    """user_habits / irrigation_duration at 8 units: 16 of 27 against 17 of 27 is 5.9 % worse - one row.
    `lead_p` informs; the spec's 5 % decides. Two looser rules were measured and not taken (BENCHMARKS.md):
    promoting unless the champion's lead was significant let through drift retrains 10-32 % worse at 40
    units; granting one row helped irrigation_duration and hurt irrigation_timing (one row: 10-14 %)."""
    one_row = Comparison("1.0.0", {"accuracy": 17 / 27}, {"accuracy": 16 / 27}, "fair hold-out", 27, lead_p=0.5)
    kept = decide(DISEASE, {"accuracy": 16 / 27}, one_row, BASELINE, "1.1.0")
    assert not kept.promote and "5.9 % worse (limit 5 %)" in kept.reason


def test_a_follow_up_is_refused_for_a_shortfall_only_when_the_champion_s_lead_is_beyond_the_noise() -> None:
    """sensor_recalibration / disease at 8 units: a follow-up two rows short on 49 (`lead_p` 0.38) was
    refused and left serving a version 8 points worse on the twin panel. A follow-up learned the same
    new world and a week more: the champion must show its lead. At 40 units irrigation_timing follow-ups
    8.7 and 13.5 % worse on 56-68 rows (`lead_p` 0.17, 0.09) served worse when let through: those stay
    refused. Nothing else loosens."""
    two_rows = Comparison("1.1.0", {"accuracy": 36 / 49}, {"accuracy": 34 / 49}, "fair hold-out", 49, lead_p=0.38)
    candidate = {"accuracy": 34 / 49}
    assert not decide(DISEASE, candidate, two_rows, BASELINE, "1.2.0").promote  # any other retrain: the 5 % rule
    served = decide(DISEASE, candidate, two_rows, BASELINE, "1.2.0", follow_up=True)
    assert served.promote and "5.6 % worse" in served.reason and "champion_lead_p 0.38" in served.reason
    for lead_p in (0.09, 0.17, FOLLOW_UP_ALPHA - 0.01):
        suggestive = Comparison("1.1.0", {"accuracy": 37 / 56}, {"accuracy": 32 / 56}, "fair hold-out", 56, lead_p)
        assert not decide(DISEASE, {"accuracy": 32 / 56}, suggestive, BASELINE, "1.2.0", follow_up=True).promote
    nothing_paired = Comparison("1.1.0", {"accuracy": 0.8}, {"accuracy": 0.7}, "live accuracy (5 rows)", 5)
    assert not decide(DISEASE, {"accuracy": 0.7}, nothing_paired, BASELINE, "1.2.0", follow_up=True).promote
    under_floor = Comparison("1.1.0", {"accuracy": 0.62}, {"accuracy": 0.52}, "fair hold-out", 30, lead_p=0.4)
    kept = decide(DISEASE, {"accuracy": 0.52}, under_floor, BASELINE, "1.2.0", follow_up=True)
    assert not kept.promote and "which v1.1.0 meets" in kept.reason


# ----------------------------------------------------------------------------- end to end
def test_a_follow_up_run_s_gate_lets_a_shortfall_within_the_noise_through_and_no_other_run_s(
    plant_store: PlantDataStore, instance: dg.DagsterInstance
) -> None:
    """The drift policy's tag reaches the gate. An identical retrain is 0 % better; with a tolerance of
    -5 % (a candidate must be 5 % better) it is short, and the champion's lead is nil (p = 1)."""
    assert retrain(MODEL, plant_store, instance).success
    strict = pipeline_resources(plant_store, rollback_tolerance_pct=-5.0)
    plain = metadata_of(retrain(MODEL, plant_store, instance, resources=strict), "validation_metrics")
    assert plain["promoted"] is False and "worse (limit -5 %)" in plain["reason"]
    follow_up = metadata_of(retrain(MODEL, plant_store, instance, resources=strict,
                                    tags={ATTEMPT_TAG: FOLLOW_UP}), "validation_metrics")
    assert follow_up["promoted"] is True and follow_up["champion_lead_p"] >= FOLLOW_UP_ALPHA
    assert "a follow-up and the champion's lead is within the noise" in follow_up["reason"]
    assert ModelRegistryResource().get().get_active_version(MODEL) == follow_up["new_version"]


def test_a_gate_in_another_run_judges_a_candidate_by_what_its_training_run_was_asked(
    plant_store: PlantDataStore, instance: dg.DagsterInstance
) -> None:
    """A follow-up's run can end between training and its gate; the gate materialized in another run
    (run recovery, or a person) reads the drift policy's tags from the run that trained the candidate,
    so it judges as the candidate's own run would have: the follow-up rule for a follow-up only."""
    assert retrain(MODEL, plant_store, instance).success
    strict = pipeline_resources(plant_store, rollback_tolerance_pct=-5.0)

    def gate_in_another_run(tags: dict[str, str]) -> dict:
        trained = dg.materialize(RETRAIN_ASSETS, selection=["training_samples", "engineered_features", "trained_model"],
                                 partition_key=MODEL, instance=instance, resources=strict, tags=tags)
        io_manager.MODELS.take(trained.run_id, MODEL)  # its process gone: nothing handed over in memory
        gate = dg.materialize(RETRAIN_ASSETS, selection=["validation_metrics"], partition_key=MODEL,
                              instance=instance, resources=strict)
        assert ATTEMPT_TAG not in instance.get_run_by_id(gate.run_id).tags
        return metadata_of(gate, "validation_metrics")

    plain = gate_in_another_run({})
    assert plain["promoted"] is False and "worse (limit -5 %)" in plain["reason"]
    follow_up = gate_in_another_run({ATTEMPT_TAG: FOLLOW_UP})
    assert follow_up["promoted"] is True, follow_up["reason"]
    assert "a follow-up and the champion's lead is within the noise" in follow_up["reason"]
    assert ModelRegistryResource().get().get_active_version(MODEL) == follow_up["new_version"]


def test_with_two_time_ranges_the_champion_is_judged_only_on_rows_it_never_saw(
    plant_store: PlantDataStore, instance: dg.DagsterInstance
) -> None:
    """Champion on `last_30d` (trained up to ~6 days ago), candidate on `last_90d` (hold-out: the last
    ~18 days): only the hold-out rows after the champion's last training row may be compared."""
    assert retrain(MODEL, plant_store, instance, {"time_range": "last_30d"}).success
    registry = ModelRegistryResource().get()
    champion = registry.get_version(MODEL, "1.0.0")
    assert champion.train_start_ts < champion.train_end_ts
    run = retrain(MODEL, plant_store, instance, {"time_range": "last_90d"})
    meta = metadata_of(run, "validation_metrics")

    split = time_split(engineer_features(plant_store.training_samples(MODEL, time_range="last_90d")))
    fair = split.ts_holdout > champion.train_end_ts
    assert 0 < fair.sum() < len(fair), "some of the candidate's hold-out is the champion's training data"
    assert meta["fair_holdout_rows"] == int(fair.sum()) and meta["holdout_rows"] == len(fair)
    assert meta["compared_on"].startswith(f"fair hold-out ({int(fair.sum())} of {len(fair)} rows")
    truth = split.y_holdout[fair].to_numpy()
    champion_model = registry.load_model(MODEL, "1.0.0")
    unseen = float(np.mean(champion_model.predict(split.X_holdout[fair]) == truth))
    assert meta["old_accuracy"] == pytest.approx(unseen, abs=1e-4)  # metadata is rounded to 4 digits
    # how surely the champion beat the candidate on those rows: the sign test on the rows one got right
    champion_hits = champion_model.predict(split.X_holdout[fair]) == truth
    candidate_hits = registry.load_model(MODEL, "1.1.0").predict(split.X_holdout[fair]) == truth
    champion_only = int(np.sum(champion_hits & ~candidate_hits))
    candidate_only = int(np.sum(candidate_hits & ~champion_hits))
    expected = binom.sf(champion_only - 1, champion_only + candidate_only, 0.5) if champion_only else 1.0
    assert meta["champion_lead_p"] == pytest.approx(expected, abs=1e-4)
    # on every hold-out row, rows it trained on included, the champion would have looked better
    flattering = float(np.mean(champion_model.predict(split.X_holdout) == split.y_holdout.to_numpy()))
    assert flattering > meta["old_accuracy"]


def test_too_few_unseen_rows_fall_back_to_recorded_metrics_and_say_so(
    plant_store: PlantDataStore, instance: dg.DagsterInstance
) -> None:
    assert retrain(MODEL, plant_store, instance, {"time_range": "last_5d", "min_samples": 30}).success
    registry = ModelRegistryResource().get()
    champion = _served(registry, registry.get_version(MODEL, "1.0.0"))
    meta = metadata_of(retrain(MODEL, plant_store, instance), "validation_metrics")
    assert meta["fair_holdout_rows"] < MIN_FAIR_ROWS
    assert meta["compared_on"].startswith(
        f"recorded (only {meta['fair_holdout_rows']} hold-out rows after v{champion.version}")
    assert meta["old_accuracy"] == pytest.approx(champion.metrics["accuracy"], abs=1e-4)


def test_too_few_unseen_rows_in_a_drift_retrain_compare_with_the_accuracy_served_since_the_change(
    plant_store: PlantDataStore, instance: dg.DagsterInstance
) -> None:
    """A drifted champion's recorded score describes the world before the drift: the drift check's
    `accuracy_since_change` (a run tag) is the yardstick instead, and the metadata says so."""
    assert retrain(MODEL, plant_store, instance, {"time_range": "last_5d", "min_samples": 30}).success
    registry = ModelRegistryResource().get()
    champion = _served(registry, registry.get_version(MODEL, "1.0.0"))
    meta = metadata_of(retrain(MODEL, plant_store, instance, tags={LIVE_ACCURACY_TAG: "0.1234"}),
                       "validation_metrics")
    assert meta["fair_holdout_rows"] < MIN_FAIR_ROWS
    assert meta["compared_on"].startswith(f"live accuracy (only {meta['fair_holdout_rows']} hold-out rows after "
                                          f"v{champion.version}")
    assert meta["old_accuracy"] == pytest.approx(0.1234) and meta["promoted"] is True


def _served(registry: ModelRegistry, trained: ModelVersion) -> ModelVersion:
    """`trained` as the active version. Five days of the day's test world may not beat the naive rule
    (the gate then rightly rejects it, and a rejected version is never served): the same model and
    facts are then registered anew and promoted, as a champion this test can stand on."""
    if trained.status == ModelStatus.ACTIVE:
        return trained
    facts = ModelMetadata(model_type=MODEL, feature_names=trained.feature_names,
                          training_samples=trained.training_samples, training_duration=trained.training_duration,
                          performance_metrics=trained.metrics, train_start_ts=trained.train_start_ts,
                          train_end_ts=trained.train_end_ts)
    version = registry.register_model(MODEL, registry.load_model(MODEL, trained.version), facts).version
    registry.promote(MODEL, version, reason="the champion this test needs")
    return registry.get_version(MODEL, version)


def test_parallel_retrains_each_gate_their_own_candidate(
    isolated_dagster_home: Path, plant_db_url: str
) -> None:
    """The issue's race: 8 parallel `retrain_model` calls (here 4 processes, 2 cores) of one model type."""
    dg.DagsterInstance.from_config(str(isolated_dagster_home)).dispose()  # the instance's schema, made once
    workers = [retrain_worker.start(isolated_dagster_home, plant_db_url, MODEL, f"last_{85 + i}d", text=True)
               for i in range(4)]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    registry = ModelRegistryResource().get()
    versions = [r["new_version"] for r in results]
    assert sorted(versions) == ["1.0.0", "1.1.0", "1.2.0", "1.3.0"], "one version per run, none claimed twice"
    for result in results:
        record = registry.get_version(MODEL, result["new_version"])
        assert record.run_id == result["run_id"], "each run gated and reported the version it trained"
        assert record.status == (ModelStatus.ACTIVE if result["new_version"] == registry.get_active_version(MODEL)
                                 else record.status)
    statuses = {v.version: v.status for v in registry.list_versions(MODEL)}
    assert ModelStatus.CANDIDATE not in statuses.values(), statuses
    assert list(statuses.values()).count(ModelStatus.ACTIVE) == 1
    promoted = [e.to_version for e in registry.audit_trail(MODEL) if e.event == "promoted"]
    assert promoted == sorted(promoted, key=parse_version), "an older version never replaced a newer active one"


def test_hold_out_predictions_of_other_features_are_refused_and_decide_nothing(
    plant_store: PlantDataStore, tmp_path: Path
) -> None:
    """The gate scores the candidate from the predictions it made when trained; predictions that do
    not cover this hold-out (a forged or stale model object) must not promote or reject anything."""
    features = engineer_features(plant_store.training_samples(MODEL, min_samples=1, time_range="last_90d"))
    split = time_split(features)
    model = train_model(features, split)
    registry = ModelRegistry(tmp_path / "registry")
    record = registry.register_model(MODEL, model.estimator, ModelMetadata(
        model_type=MODEL, feature_names=model.feature_names, training_samples=model.training_samples,
        training_duration=model.training_duration, performance_metrics=model.metrics,
        hyperparameters=model.hyperparameters, data_fingerprint=model.data_fingerprint))
    model.version = record.version
    model.holdout = predict(model.estimator, split.X_holdout, DISEASE).subset(np.arange(len(split.y_holdout)) % 2 == 0)
    with pytest.raises(RegistryError, match="hold-out predictions cover"):
        run_gate(registry, model, features)
    assert registry.get_version(MODEL, record.version).status == ModelStatus.CANDIDATE
    assert registry.get_active_version(MODEL) is None


@pytest.mark.parametrize("model_type", ["disease", "irrigation_duration"])
def test_the_single_feature_rules_score_what_plain_scikit_learn_trees_score(model_type: str) -> None:
    """The rules skip work scikit-learn would repeat per tree (classes sorted, the input checked); each
    must still be the tree scikit-learn fits on that input alone, gaps filled - and a hold-out class the
    training rows never had is a miss, as a string no tree predicts was."""
    spec = get_spec(model_type)
    rng = np.random.default_rng(3)
    n = 400
    X = pd.DataFrame({"a": rng.normal(0, 1, n), "b": rng.integers(0, 5, n).astype(float), "c": rng.uniform(0, 9, n)})
    X.loc[X.index % 7 == 0, "b"] = np.nan
    if spec.task == "classification":
        sick = X["a"] + rng.normal(0, 0.5, n) > 0.3
        y = pd.Series(np.where(sick, "blight", np.where(X["c"] > 4.5, "mildew", "none")))
        y[350:360] = "rust"  # only in the hold-out
    else:
        y = pd.Series(X["c"] * 10 + rng.normal(0, 8, n))
    split = TimeSplit(X[:300], y[:300], X[300:], y[300:], np.arange(300), np.arange(300, n))
    tree = DecisionTreeClassifier if spec.task == "classification" else DecisionTreeRegressor
    expected = {}
    for column in X.columns:
        fill = split.X_train[column].median()
        rule = tree(max_leaf_nodes=RULE_LEAVES, random_state=0).fit(
            split.X_train[[column]].fillna(fill), split.y_train)
        predicted = rule.predict(split.X_holdout[[column]].fillna(fill))
        expected[column] = accuracy_of(spec, split.y_holdout.to_numpy(), predicted)
    assert single_feature_rules(split, spec) == expected
    assert min(expected.values()) > 0 and max(expected.values()) < 1


def test_a_single_feature_rule_is_learnt_per_input_with_gaps_filled_and_empty_inputs_skipped() -> None:
    """The `beats_single_feature_rule` check's yardstick: each input alone, NaN read as the training median."""
    rng = np.random.default_rng(0)
    n = 300
    decisive = rng.uniform(0, 10, n)
    labels = np.where(decisive > 5, "sick", "healthy")
    gappy = decisive.copy()
    gappy[::4] = np.nan  # a quarter missing: the median (~5) decides those rows, so they score ~half right
    X = pd.DataFrame({"decisive": decisive, "gappy": gappy, "noise": rng.uniform(0, 1, n), "empty": np.nan})
    y = pd.Series(labels)
    split = TimeSplit(X[:200], y[:200], X[200:], y[200:], np.arange(200), np.arange(200, n))
    scores = single_feature_rules(split, DISEASE)
    assert set(scores) == {"decisive", "gappy", "noise"}  # nothing to learn from an input never measured
    assert scores["decisive"] >= 0.98  # a threshold learnt between training rows: a hold-out row may fall inside
    assert 0.8 < scores["gappy"] < 0.95
    assert scores["noise"] < 0.7
    assert best_single_feature(split, DISEASE) == ("decisive", scores["decisive"])
