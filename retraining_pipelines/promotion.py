"""The promotion gate (the spec's rollback rule, done before serving) and the retrain result.

The spec rolls back *after* deploying a worse model. We judge first, and fairly:

* **Same rows, unseen by both.** Candidate and active version are scored on the candidate's
  hold-out rows that come after the active version's last training row (`train_end_ts`, recorded
  with each version). Rows the champion learned from would flatter it - two jobs with different
  time ranges (weekly `last_90d`, on_drift `last_30d`) made the old gate reject equal or better
  candidates at -7 to -9 %.
* **Too few fair rows** (< `MIN_FAIR_ROWS`): the candidate's whole hold-out is compared with the
  champion's *recorded* validation metrics (each measured on data its model never saw), and the
  metadata says `compared_on: recorded (...)` - except for a drift retrain, where the recorded score
  describes the world before the drift: there the champion's accuracy on all it served since the
  change (the drift check's `accuracy_since_change`, a run tag) is used, `compared_on: live
  accuracy`. Not the verdict's `current_accuracy`: that window was picked among several for making
  the strongest case for a drop, so it tends to understate the champion. The recorded metrics are
  also used when the champion cannot run on the new features (a MAJOR change) or its file fails
  its checksum.
* **The rule.** `improvement` is relative, in percent (0.87 -> 0.91 is 4.6). With an active version
  the candidate is promoted when `improvement >= -tolerance_pct` (the spec's 5 %) and either it
  meets the catalog's floor or the active version misses the floor too on the same rows - then the
  better of two weak models is served, with a warning, rather than leaving the worse one in place.
  A first version must meet the floor *and* beat the naive baseline (majority class / mean).
  A candidate older than the active version (a slower parallel run) is rejected as superseded.
* **How sure.** On the fair hold-out the comparison also says how surely the champion beat the
  candidate (`lead_p`, shown as `champion_lead_p`: an exact one-sided sign test on the rows exactly
  one of the two got right, `drift.paired_p_value`). It informs, it does not decide (but for a
  follow-up, below): letting every drift retrain through unless the champion's lead was
  significant at 5 % let candidates 10-32 % worse on 44-100 rows serve at 40 units
  (BENCHMARKS.md, "A drift retrain refused on evidence"). Nor does one row decide less: promoting
  a candidate that one more right row would put within 5 % helped irrigation_duration and hurt
  irrigation_timing, whose one row is 10-14 % (BENCHMARKS.md, "One row never decides? Measured,
  not taken").
* **A follow-up: the champion must show its lead.** A follow-up retrain (`drift_policy`: a week or
  two after a confirmed drift, on the weeks since the change) learns the same new world as the
  drift retrain it would replace, and a week more of it; the version it would replace either
  drifted or learned mostly from before the change. There a hold-out of a few dozen rows refused
  follow-ups one or two rows short (34 against 36 of 49, `lead_p` 0.38) and left serving a version
  8 points worse on the twin panel. So a follow-up on the fair hold-out is refused for being more
  than the tolerance worse only when the champion's lead is beyond the noise (`lead_p <
  FOLLOW_UP_ALPHA`, 0.25): at 8 units the refusals it undoes had `lead_p` 0.31-0.5, while at 40
  units two irrigation_timing follow-ups 9-14 % worse on 56-68 rows (`lead_p` 0.09, 0.17) served
  worse when let through at 0.05 (BENCHMARKS.md, "A follow-up: the champion must show its lead").
  The floor still holds, and a follow-up that serves worse is rolled back on what it served
  (`drift_policy`'s live rollback). Other retrains keep the spec's rule.
* **Its own candidate.** The gate judges the version its run registered. Promotion is a
  compare-and-swap on the active version: if another run promoted in between, the gate judges
  again against the new champion.
* **Never on rows it learned.** A gate materialized in another run than its candidate's (before
  run health abandons a candidate whose run ended, or where no daemon runs) re-predicts the
  registered version on the hold-out its record describes: a drift retrain's split from its recent
  window (`recent_from_ts`, recorded), never the whole window's newest fifth, which holds rows it
  trained on. A drift retrain fitted again on its hold-out once judged (`learned_holdout`) can be
  judged only by the predictions its own run made before that: another run refuses to judge it,
  and it stays a candidate (run health abandons it once its run ended).

A rejected candidate is kept for inspection; the active model is never touched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from retraining_pipelines.catalog import ModelSpec, get_spec
from retraining_pipelines.drift import paired_p_value
from retraining_pipelines.errors import ModelIntegrityError, RegistryError
from retraining_pipelines.features import FeatureSet
from retraining_pipelines.registry import ActiveVersionChanged, ModelRegistry, ModelStatus
from retraining_pipelines.training import (
    Predictions,
    TimeSplit,
    TrainedModel,
    best_single_feature,
    hits_of,
    metrics_of,
    naive_baseline,
    predict,
    time_split,
)
from retraining_pipelines.versioning import parse_version

#: The spec's rule: roll back when the new accuracy is more than 5 % worse than the old.
ROLLBACK_TOLERANCE_PCT = 5.0
#: Fewer hold-out rows than this after the champion's training period: compare recorded metrics.
MIN_FAIR_ROWS = 20
#: A follow-up more than the tolerance worse is refused only when the champion's lead is this sure
#: (0.05 let through follow-ups that served worse at 40 units; the module docstring).
FOLLOW_UP_ALPHA = 0.25
#: How often the gate judges again when parallel runs keep changing the active version.
MAX_GATE_ATTEMPTS = 5


def relative_improvement(old_accuracy: float | None, new_accuracy: float) -> float | None:
    """Accuracy change relative to the old one, in percent: 0.87 -> 0.91 is 4.6 (None without an old)."""
    if old_accuracy is None:
        return None
    if old_accuracy <= 0:
        return 0.0 if new_accuracy <= 0 else 100.0
    return 100.0 * (new_accuracy - old_accuracy) / old_accuracy


@dataclass(frozen=True)
class Comparison:
    """The champion and the candidate scored on one basis (see the module docstring)."""

    champion_version: str | None
    champion: dict[str, float] | None  # the champion's metrics on the basis
    candidate: dict[str, float]  # the candidate's metrics on the same basis
    basis: str  # "fair hold-out" | "recorded (<why>)" | "none"
    fair_rows: int = 0
    #: On the fair hold-out: p of "the champion is no better than the candidate" (`drift.paired_p_value`).
    lead_p: float | None = None


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    improvement: float | None
    warnings: tuple[str, ...] = ()


def compare_with_champion(
    registry: ModelRegistry, spec: ModelSpec, candidate: Predictions, split: TimeSplit, feature_names: list[str],
    candidate_full: dict[str, float], live_accuracy: float | None = None,
) -> Comparison:
    """Score the active version and the candidate (its hold-out predictions) on hold-out rows neither was
    trained on."""
    version = registry.get_active_version(spec.model_type)
    if version is None:
        return Comparison(None, None, candidate_full, "none")
    record = registry.get_version(spec.model_type, version)
    if record.feature_names != feature_names:
        return Comparison(version, record.metrics, candidate_full, "recorded (feature set changed)")
    fair = split.holdout_after(record.train_end_ts)
    rows = int(fair.sum())
    if rows < MIN_FAIR_ROWS:
        why = f"only {rows} hold-out rows after v{version}'s training period, {MIN_FAIR_ROWS} needed"
        if live_accuracy is not None:  # drifted: its old validation score describes a world that is gone
            return Comparison(version, {"accuracy": live_accuracy}, candidate_full, f"live accuracy ({why})", rows)
        return Comparison(version, record.metrics, candidate_full, f"recorded ({why})", rows)
    try:
        champion_model = registry.load_for_prediction(spec.model_type, version)
    except (ModelIntegrityError, RegistryError) as err:
        return Comparison(version, record.metrics, candidate_full, f"recorded ({err})", rows)
    X, y = split.X_holdout[fair], split.y_holdout[fair]
    basis = "fair hold-out"
    if rows < len(fair):
        basis += f" ({rows} of {len(fair)} rows, after v{version}'s training period)"
    champion_predictions, candidate_predictions = predict(champion_model, X, spec), candidate.subset(fair)
    truth = np.asarray(y)
    lead_p = paired_p_value(hits_of(spec, truth, candidate_predictions.predicted),
                            hits_of(spec, truth, champion_predictions.predicted))
    return Comparison(version, metrics_of(champion_predictions, y, spec), metrics_of(candidate_predictions, y, spec),
                      basis, rows, lead_p)


def decide(
    spec: ModelSpec,
    candidate_metrics: dict[str, float],
    comparison: Comparison,
    baseline: dict[str, float],
    candidate_version: str | None = None,
    tolerance_pct: float = ROLLBACK_TOLERANCE_PCT,
    follow_up: bool = False,
) -> GateDecision:
    """Promote or reject a candidate, with the reason a person would want to read.

    `candidate_metrics` are on the candidate's whole hold-out (the floor and baseline are judged
    there); the comparison with the champion uses `comparison`'s common basis. A `follow_up` more
    than the tolerance worse is refused only on a lead of the champion beyond the noise (module docstring).
    """
    meets_floor = spec.floor.passes(candidate_metrics)
    accuracy = candidate_metrics["accuracy"]
    if comparison.champion is None:
        if not meets_floor:
            return GateDecision(False, f"first version below the quality floor ({spec.floor.describe()})", None)
        if accuracy <= baseline["accuracy"]:
            return GateDecision(False, f"first version does not beat the naive baseline (accuracy {accuracy:.2%} "
                                f"vs {baseline['accuracy']:.2%} for always predicting the commonest value)", None)
        return GateDecision(True, "first version: meets the floor and beats the naive baseline", None)
    old, new = comparison.champion["accuracy"], comparison.candidate["accuracy"]
    improvement = relative_improvement(old, new)
    versus = f"accuracy {new:.2%} vs {old:.2%} for v{comparison.champion_version} on the {comparison.basis}"
    if candidate_version and parse_version(candidate_version) < parse_version(comparison.champion_version):
        return GateDecision(False, f"superseded: the newer v{comparison.champion_version} is already active",
                            improvement)
    if improvement < -tolerance_pct:
        worse = f"{versus}: {-improvement:.1f} % worse (limit {tolerance_pct:g} %)"
        if not _within_noise(comparison, follow_up):
            return GateDecision(False, worse, improvement)
        versus = (f"{worse}, but a follow-up and the champion's lead is within the noise of "
                  f"{comparison.fair_rows} rows (champion_lead_p {comparison.lead_p:.2f}, refused below "
                  f"{FOLLOW_UP_ALPHA:g})")
    if meets_floor:
        return GateDecision(True, f"{versus} ({improvement:+.1f} %)", improvement)
    if spec.floor.passes(comparison.champion):
        return GateDecision(False, f"below the quality floor ({spec.floor.describe()}), which "
                            f"v{comparison.champion_version} meets; {versus}", improvement)
    warning = (f"below the quality floor ({spec.floor.describe()}), like v{comparison.champion_version}: "
               "serving the better of two weak models")
    return GateDecision(True, f"{versus} ({improvement:+.1f} %); {warning}", improvement, (warning,))


def _within_noise(comparison: Comparison, follow_up: bool) -> bool:
    """A follow-up's shortfall on the fair hold-out that the champion's lead does not make sure of."""
    return follow_up and comparison.lead_p is not None and comparison.lead_p >= FOLLOW_UP_ALPHA


@dataclass(frozen=True)
class GateOutcome:
    """What the gate decided, with everything the UI and the notifications show."""

    result: RetrainingResult
    comparison: Comparison
    baseline: dict[str, float]
    holdout_rows: int
    #: The best rule on one input alone (name, hold-out accuracy): what the model must add to.
    single_feature: tuple[str, float] = ("", 0.0)


def run_gate(
    registry: ModelRegistry,
    model: TrainedModel,
    features: FeatureSet,
    *,
    tolerance_pct: float = ROLLBACK_TOLERANCE_PCT,
    run_id: str | None = None,
    live_accuracy: float | None = None,
    follow_up: bool = False,
) -> GateOutcome:
    """Judge the run's own candidate against the active version, then promote or reject it.

    A version already decided (the gate re-run from the UI) is reported, not decided again. Re-run in
    another run, the registered version predicts its hold-out again, split as its record says
    (`recent_from_ts`); one fitted again on that hold-out (`learned_holdout`) cannot be (see
    `_without_its_holdout`).
    """
    spec = get_spec(model.model_type)
    split = time_split(features, recent_from_ts=model.recent_from_ts)
    run = {"trigger": model.trigger, "run_id": run_id}
    if model.holdout is None and model.learned_holdout:
        return _without_its_holdout(registry, model, split, run)
    predictions = model.holdout if model.holdout is not None else predict(model.estimator, split.X_holdout, spec)
    if len(predictions.predicted) != len(split.y_holdout):
        raise RegistryError(f"{spec.model_type} v{model.version}: its hold-out predictions cover "
                            f"{len(predictions.predicted)} rows, the features' hold-out has {len(split.y_holdout)}; "
                            "materialize engineered_features and trained_model together.")
    candidate_full = metrics_of(predictions, split.y_holdout, spec)
    baseline = naive_baseline(split.y_train, split.y_holdout, spec)
    for _ in range(MAX_GATE_ATTEMPTS):
        comparison = compare_with_champion(registry, spec, predictions, split, model.feature_names, candidate_full,
                                           live_accuracy)
        decision = decide(spec, candidate_full, comparison, baseline, model.version, tolerance_pct, follow_up)
        status = registry.get_version(spec.model_type, model.version).status
        if status != ModelStatus.CANDIDATE:
            decision = GateDecision(status == ModelStatus.ACTIVE, f"already decided: v{model.version} is "
                                    f"{status.value}", decision.improvement)
            break
        if not decision.promote:
            registry.reject(spec.model_type, model.version, reason=decision.reason, **run)
            break
        try:
            registry.promote(spec.model_type, model.version, reason=decision.reason,
                             if_active_is=(comparison.champion_version,), **run)
            break
        except ActiveVersionChanged:
            continue  # another run promoted meanwhile: judge against the new champion
    else:
        decision = GateDecision(False, "the active version kept changing under parallel runs", None)
        registry.reject(spec.model_type, model.version, reason=decision.reason, **run)
    old_metrics, improvement = comparison.champion, decision.improvement
    if comparison.champion is None:  # a first version is compared with what the app had: no model at all
        old_metrics = baseline
        improvement = relative_improvement(baseline["accuracy"], candidate_full["accuracy"])
    result = RetrainingResult(
        model_type=spec.model_type, old_version=comparison.champion_version, new_version=model.version,
        old_metrics=old_metrics, new_metrics=candidate_full, improvement=improvement,
        training_samples=model.training_samples, training_duration=model.training_duration,
        promoted=decision.promote, reason=decision.reason,
        active_version=registry.get_active_version(spec.model_type), warnings=list(decision.warnings), **run,
    )
    return GateOutcome(result, comparison, baseline, len(split.y_holdout), best_single_feature(split, spec))


def _without_its_holdout(registry: ModelRegistry, model: TrainedModel, split: TimeSplit,
                         run: dict[str, Any]) -> GateOutcome:
    """A version fitted again on its hold-out (`training.learn_holdout`) is judged by the predictions
    its own run made before that. Re-predicted in another run (a gate materialized on its own before
    run health abandoned the candidate, or where no daemon does) it would be scored on rows it
    learned and look better than it is: a candidate is refused, unchanged; a decided version is
    reported with the metrics recorded when it was judged."""
    spec, record = get_spec(model.model_type), registry.get_version(model.model_type, model.version)
    if record.status == ModelStatus.CANDIDATE:
        raise RegistryError(
            f"{model.model_type} v{model.version} learned its hold-out once its own run's gate had the "
            f"predictions it judges on (a drift retrain learns its newest rows; run {model.run_id}); judged in "
            "another run it would be scored on rows it learned. It stays candidate: retrain to judge a new "
            "candidate (trained_model and validation_metrics in one run).")
    decision = (f"already decided: v{model.version} is {record.status.value} (its recorded hold-out metrics: it "
                "has learned its hold-out since)")
    result = RetrainingResult(
        model_type=spec.model_type, old_version=None, new_version=model.version, old_metrics={},
        new_metrics=model.metrics, improvement=None, training_samples=model.training_samples,
        training_duration=model.training_duration, promoted=record.status == ModelStatus.ACTIVE, reason=decision,
        active_version=registry.get_active_version(spec.model_type), **run)
    comparison = Comparison(None, None, model.metrics, "recorded (it has learned its hold-out since)")
    return GateOutcome(result, comparison, naive_baseline(split.y_train, split.y_holdout, spec), 0,
                       best_single_feature(split, spec))


@dataclass
class RetrainingResult:
    """The spec's `RetrainingResult`, plus what happened at the gate and why.

    For a first version (`old_version` None) `old_metrics` are the naive baseline's (always the
    commonest class, or the mean) and `improvement` is relative to it: what the app had before
    any model. So the spec's `result.old_metrics['accuracy']` and `result.improvement` always work.
    """

    model_type: str
    old_version: str | None
    new_version: str
    old_metrics: dict[str, float]
    new_metrics: dict[str, float]
    improvement: float | None
    training_samples: int
    training_duration: float
    promoted: bool = False
    reason: str = ""
    active_version: str | None = None
    trigger: str = "manual"
    run_id: str | None = None
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The spec's JSON shape (improvement rounded to one decimal, as in its example)."""
        out = asdict(self)
        out.pop("extra")
        if self.improvement is not None:
            out["improvement"] = round(self.improvement, 1)
        return out
