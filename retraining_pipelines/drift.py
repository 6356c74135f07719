"""Drift detection: is the active model still as accurate as when it was promoted?

`accuracy_drift` is the *relative* drop of accuracy from the baseline (the active version's
validation accuracy): (baseline - current) / baseline. 0.15 means "15 % less accurate than it
was", which is how the spec phrases a job's `drift_threshold` ("retrain if accuracy drops
>15 %"), and the same definition is compared with the threshold everywhere.

**Decided with evidence, not fixed counts.** A model has drifted when its estimated relative drop
passes the threshold *and* the drop is significant: a one-sided binomial test of "accuracy is at
least half-way from the baseline to the threshold" (`baseline x (1 - threshold/2)`: validation
accuracy is a little optimistic, and testing against the baseline itself false-alarmed on stable
worlds) on the labelled predictions of windows that grow back from now - the last 1,
2, 4, 7 and 14 UTC days, the current one so far included (the database tallies the log per day,
see `prediction_days`) - with a Bonferroni correction over the windows (cautious for windows that
share their labels: 2-3 % where it means 5 %; the exact figure was measured and raised false retrains
past one per model per 90 stable days, BENCHMARKS.md). An abrupt drift shows in the
shortest window within a day or two even for a grower with a dozen labels a day, a slow one in the
longest, and noise on a stable model rarely passes a 1 % test. `p_value` and `window_days` say how
sure the verdict is and on what. A drop past the threshold that is not yet significant is reported
as `insufficient_data` ("suspected") and the windows keep growing until it is; fewer than
`min_labelled` (10) labelled predictions give no verdict at all.

**Against what it served, once it has served enough** (`served_drop`). A validation accuracy is
estimated on a hold-out of a few dozen rows at a grower's scale, and a version can serve better
than it: one validated at 0.655 that served 0.72 loses over a fifth of that before it falls 15 % below
its validation. Once a version has served `SERVED_BASELINE_MIN` (50) labelled predictions before an
evidence window, each window is also tested against them (a one-sided Fisher exact test,
Bonferroni over the windows); a drop past the threshold significant at 5 % is drift too, reported
with `baseline_source = "served"` and that record as `baseline_accuracy`.

**Input shift: drift seen before any label arrives.** A hobby grower logs ~5 irrigation outcomes
a day, too few to see a 15 % accuracy drop within days; the sensors log hundreds of readings. Per
sensor, the mean over units of the daily means gives one series; its *jump* - the mean of the last
`SHIFT_RECENT_DAYS` days minus the mean of the `SHIFT_BEFORE_DAYS` before them - is compared with the
jumps the same series made on every earlier day of the last `SHIFT_HISTORY_DAYS` (median and MAD: a
robust z). Comparing jumps with jumps respects what plain per-row tests ignore: weather spells last
days (autocorrelation) and the season moves slowly (a 2-day jump against 14 days barely sees it),
and calendar or history features are never looked at. The inputs have shifted when the norm of the
sensors' z-scores passes `SHIFT_LIMIT` (5) and a second sensor backs the first (|z| >= 2.5: a humid
spell moves humidity alone, a heat wave, an early season or a recalibration move two or more). Every
heat wave and early season generated passed it on its first day; stable worlds did not. Jobs
choose whether it triggers a retrain (`drift_signal`). Asked after the fact - did the sensors move
with a change the labels dated (`inputs_moved_since`) - it also weighs the week since that change
against the two before (`level_shift_since`, the same robust z against the same comparison on every
earlier day): a recalibrated sensor's step stays, and a week of it stands out where its first two
days read as weather (at 8 units, 15 of 16 generated recalibrations against 12).

**Feature shift: the same test on the model's own inputs, reported per feature.** A model sees
more than the sensors: a grower's usual watering hour, a unit's mean watering time, the growth so
far. Per non-calendar feature, the daily mean over the model's label events of the last
`SHIFT_HISTORY_DAYS` days gives a series, judged exactly like the sensors (jump against the
series' own jumps). It replaces a per-row KS / Wasserstein comparison of the last week with the
version's training tail, which flagged most windows of stable worlds: any two stretches of time
differ by season and by weather spells, and that test could not know it. Reported (`feature_shift`,
per feature robust z), never a trigger on its own - the sensors' verdict is (`drift_signal`) - and
computed on request (`check_logged(with_features=True)`, the service's `check_drift`): it engineers
60 days of features, ~2 s per model at 40 units, too much for every sensor tick.

**The version it replaced, on the same events** (`compare_served`). For two weeks after a version
was trained, it and the version it replaced are replayed on the labelled events since, paired by
event: the evidence for the spec's rollback rule after serving (the policy acts on it in
`drift_policy`). Pairing cancels what both share, so an exact sign test on the events only one
of them got right tells them apart from a few dozen events.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import binom, chi2, fisher_exact

from retraining_pipelines import validation
from retraining_pipelines.catalog import ModelSpec, get_spec
from retraining_pipelines.errors import (
    InsufficientSamplesError,
    InvalidFieldError,
    ModelIntegrityError,
    RegistryError,
)
from retraining_pipelines.features import FeatureSet, engineer_features
from retraining_pipelines.plantdb import DAY, PlantDatabase, PlantQueries, Window, predictions
from retraining_pipelines.registry import ModelRegistry, ModelVersion
from retraining_pipelines.settings import registry_dir
from retraining_pipelines.training import HOLDOUT_FRACTION, accuracy_of, hits_of

DEFAULT_THRESHOLD = 0.15
MIN_LABELLED = 10  # labelled predictions before any accuracy verdict
#: The evidence windows (days back from now) and the significance level over all of them.
EVIDENCE_WINDOWS_DAYS = (1, 2, 4, 7, 14)
DRIFT_ALPHA = 0.05
DRIFT_WINDOW = f"last_{EVIDENCE_WINDOWS_DAYS[-1]}d"
#: How far back the prediction log is searched for the day accuracy changed.
CHANGE_SEARCH = "last_60d"
#: Labelled predictions a version must have served before an evidence window for its own record to
#: be a baseline (`served_drop`): as many as a small hold-out holds.
SERVED_BASELINE_MIN = 50
CHANGE_MIN_SIDE = 10  # labelled predictions on each side of a change point
#: How sure a split of the log must be to date a drop in it (see `locate_change`): a log that starts
#: where the version's rows end, and one that starts days later.
CHANGE_ALPHA = 0.05
CHANGE_ALPHA_AFTER_GAP = 0.01
LOG_GAP_DAYS = 2  # unlogged days between the version's newest row and its log's first day
#: The input-shift test (see the module docstring).
SHIFT_RECENT_DAYS = 2
SHIFT_BEFORE_DAYS = 14
SHIFT_HISTORY_DAYS = 60
SHIFT_MIN_NULL_DAYS = 14  # earlier jumps needed before a verdict
SHIFT_LIMIT = 5.0
SHIFT_SECOND_SENSOR = 2.5  # a second sensor's |z| that must back the jump: one alone is a humid spell
#: `inputs_moved_since` looks this many days before the change point too: it is dated from labels.
SHIFT_SLACK_DAYS = 3
#: `inputs_moved_since` also weighs the levels of up to a week since the change: a step that stays
#: (a recalibrated sensor) grows surer by the day, where the 2-day jump sees it once, beside the weather.
SHIFT_SINCE_DAYS = 7
Status = Literal["drift", "stable", "insufficient_data", "no_active_model"]


@dataclass(frozen=True)
class InputShift:
    """Whether the daily levels of the sensors (or of a model's features) jumped more than they ever
    do (see the module docstring)."""

    shifted: bool | None  # None: too little history for a verdict
    score: float | None  # norm of the per-series robust z-scores
    per_sensor: dict[str, float]  # robust z of each series' latest jump (sensors; features in `feature_shift`)
    change_days_ago: int  # the jump is in the last this many days
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftMetrics:
    """The spec's drift metrics (`accuracy_drift`, `requires_retraining`) and the evidence."""

    model_type: str
    model_version: str | None
    status: Status
    accuracy_drift: float | None
    requires_retraining: bool
    baseline_accuracy: float | None
    current_accuracy: float | None
    sample_count: int
    min_samples: int
    threshold: float
    reason: str
    p_value: float | None = None  # of "accuracy >= baseline x (1 - threshold/2)"; small = sure it dropped
    window_days: int | None = None  # the evidence window the verdict rests on
    change_days_ago: int | None = None  # when accuracy dropped (None: no clear change; see `change_point`)
    #: The log before any drop inside it has drifted from the version's validation too: the drop came
    #: between the newest row the version saw and its first logged outcome, and `change_days_ago`
    #: counts from that row (`locate_change`).
    change_before_log: bool = False
    #: What `baseline_accuracy` is: the version's `validation` accuracy, or what it `served` before the
    #: evidence window (`served_drop`).
    baseline_source: Literal["validation", "served"] = "validation"
    #: The version's accuracy on all it served since `change_days_ago` (no change located: over the
    #: verdict's longest window) - what a drift retrain must beat where too few rows compare them
    #: directly. `current_accuracy` comes from the window that made the strongest case for drift,
    #: picked among several, so it tends to understate the version and flatter a candidate
    #: (BENCHMARKS.md, "The champion's live accuracy, unselected").
    accuracy_since_change: float | None = None
    input_shift: InputShift | None = None  # the sensors' verdict, where the job asked for it
    feature_shift: InputShift | None = None  # the model's own inputs, per feature (a report, not a trigger)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ServedComparison:
    """The active version against the version it replaced, on the same labelled events since it was
    trained: the spec's rollback rule ("new accuracy < old accuracy - 5 %") judged on what it served."""

    model_type: str
    active_version: str
    previous_version: str
    labelled: int  # labelled events in the evidence window
    active_accuracy: float
    previous_accuracy: float
    p_value: float  # of "the previous version is no better" (discordant pairs, Bonferroni over windows)
    window_days: int


def drop_p_value(baseline: float, threshold: float, hits: int, count: int) -> float:
    """p of "accuracy >= baseline x (1 - threshold/2)" given `hits` of `count`: half-way from the
    baseline to the threshold, because a slightly optimistic baseline must raise no alarm."""
    return float(binom.cdf(hits, count, baseline * (1 - threshold / 2)))


def accuracy_drift(baseline: float, current: float) -> float:
    """Relative accuracy drop: 0.80 -> 0.68 is 0.15. Negative when the model got better."""
    return (baseline - current) / baseline if baseline > 0 else 0.0


def evidence_windows(longest: int) -> list[int]:
    """The windows (days back from now) a verdict looks at: `EVIDENCE_WINDOWS_DAYS` up to `longest`."""
    return [d for d in EVIDENCE_WINDOWS_DAYS if d < longest] + [longest]


def window_sums(history: dict[int, tuple[int, int]], days: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(right, labelled) of a tally by age in days: inside the last `days` days, and before them."""
    inside, before = [0, 0], [0, 0]
    for age, (hits, count) in history.items():
        total = inside if age < days else before
        total[0] += hits
        total[1] += count
    return (inside[0], inside[1]), (before[0], before[1])


def served_drop(history: dict[int, tuple[int, int]], longest: int, min_labelled: int = MIN_LABELLED,
                ) -> tuple[float, int, tuple[int, int], tuple[int, int]] | None:
    """The strongest evidence that a version now serves worse than it served before: per evidence
    window, a one-sided Fisher exact test of its labelled predictions inside the window against all
    it served before the window (at least `SERVED_BASELINE_MIN` of them), Bonferroni over the windows
    tested. (p, days, (hits, labelled) inside, (hits, labelled) before); None: no window has the labels.

    Its validation accuracy is the baseline a version starts with, estimated on a hold-out of a few
    dozen rows at a grower's scale: one that served better than validated (0.72 against 0.655) can
    lose over a fifth of what it served and still look within 15 % of its validation. Once it has
    served more labelled predictions than its hold-out held, its own record is the surer baseline.
    """
    tests = []
    for days in evidence_windows(longest):
        (new_h, new_n), (old_h, old_n) = window_sums(history, days)
        if new_n < min_labelled or old_n < SERVED_BASELINE_MIN:
            continue
        table = [[new_h, new_n - new_h], [old_h, old_n - old_h]]
        tests.append((float(fisher_exact(table, alternative="less").pvalue), days, (new_h, new_n), (old_h, old_n)))
    if not tests:
        return None
    p_value, days, inside, before = min(tests)
    return min(1.0, p_value * len(tests)), days, inside, before


def served_verdict(metrics: DriftMetrics, history: dict[int, tuple[int, int]], longest: int) -> DriftMetrics | None:
    """Drift against what the version served before (`served_drop`), where the validation verdict saw
    none: a drop past the threshold, significant at `DRIFT_ALPHA`. None: no such drop."""
    found = served_drop(history, longest, metrics.min_samples)
    if found is None:
        return None
    p_value, days, (new_h, new_n), (old_h, old_n) = found
    baseline, current = old_h / old_n, new_h / new_n
    drift = accuracy_drift(baseline, current)
    if p_value >= DRIFT_ALPHA or drift <= metrics.threshold:
        return None
    reason = (f"accuracy {current:.2%} vs {baseline:.2%} served before (n={old_n}): drift {drift:.3f} > threshold "
              f"{metrics.threshold:g} (last {days} d, n={new_n}, p={p_value:.2g}; validation baseline "
              f"{metrics.baseline_accuracy:.2%})")
    return replace(metrics, status="drift", accuracy_drift=drift, requires_retraining=True, baseline_accuracy=baseline,
                   current_accuracy=current, sample_count=new_n, window_days=days, p_value=p_value, reason=reason,
                   baseline_source="served")


def prediction_accuracy(spec: ModelSpec, predicted: Sequence[Any], actual: Sequence[Any]) -> float:
    """Accuracy of logged predictions, by the catalog's definition for the model type."""
    kind = str if spec.task == "classification" else float  # the log keeps both as text
    return accuracy_of(spec, np.asarray(actual, dtype=kind), np.asarray(predicted, dtype=kind))


class DriftDetector:
    """Judges the active version of each model type against its own validation accuracy."""

    def __init__(self, registry: ModelRegistry | None = None, store: PlantQueries | None = None,
                 min_labelled: int = MIN_LABELLED, threshold: float = DEFAULT_THRESHOLD) -> None:
        """No arguments: the DAGSTER_HOME registry and plant database, like `AutomatedRetrainingService()`."""
        self.registry = registry if registry is not None else ModelRegistry(registry_dir())
        self.store = store if store is not None else PlantDatabase()
        self.min_labelled = validation.whole("min_labelled", min_labelled, 1, validation.MAX_MIN_SAMPLES)
        self.threshold = validation.drift_threshold(threshold, "threshold")

    def check_drift(
        self,
        model_type: str,
        recent_predictions: Sequence[Any],
        recent_actuals: Sequence[Any],
        threshold: float | None = None,
    ) -> DriftMetrics:
        """The spec's `check_drift`: predictions and actual outcomes in, a verdict out."""
        if len(recent_predictions) != len(recent_actuals):
            raise InvalidFieldError("recent_actuals", f"{len(recent_actuals)} values",
                                    f"one per prediction ({len(recent_predictions)})")
        spec = get_spec(model_type)
        if threshold is not None:
            validation.drift_threshold(threshold, "threshold")
        n = len(recent_predictions)
        hits = round(prediction_accuracy(spec, recent_predictions, recent_actuals) * n) if n else 0
        return self._verdict(spec, self._active(model_type), [(None, hits, n)], threshold)

    def check_logged(
        self, model_type: str, window: str = DRIFT_WINDOW, threshold: float | None = None,
        end: datetime | None = None, with_features: bool = True,
    ) -> DriftMetrics:
        """Drift of the active version from the prediction log (SQL aggregation) and recent inputs."""
        spec = get_spec(model_type)
        window_s = validation.time_range(window, "window")
        if threshold is not None:
            validation.drift_threshold(threshold, "threshold")
        span = Window.last(window, end)
        record = self._active(model_type)
        version = record.version if record is not None else None
        search = Window.last(CHANGE_SEARCH, end) if validation.time_range(CHANGE_SEARCH) > window_s else span
        history = self.store.logged_hits_by_age(model_type, version, search) if version else {}
        longest = (span.end_ts - span.start_ts) // DAY
        evidence = []
        for days in evidence_windows(longest):
            (hits, count), _ = window_sums(history, days)
            if not evidence or count > evidence[-1][2]:
                evidence.append((days, hits, count))
        metrics = self._verdict(spec, record, evidence or [(longest, 0, 0)], threshold)
        if not metrics.requires_retraining and record is not None:
            metrics = served_verdict(metrics, history, longest) or metrics
        features = self.check_features(model_type, end) if with_features else None
        change, before_log = locate_change(history, record, span.end_ts, metrics.threshold)
        if change is None and metrics.baseline_source == "served":
            change = metrics.window_days  # the drop lies inside the window that shows it
        (hits, count), _ = window_sums(history, change if change is not None else longest)
        return replace(metrics, change_days_ago=change, change_before_log=before_log, feature_shift=features,
                       accuracy_since_change=hits / count if count else None)

    def check_inputs(self, end: datetime | None = None) -> InputShift:
        """Have the sensors' daily levels jumped (no labels needed)? Reads whole days before `end`."""
        end_ts = _day_start(end)
        start_ts = end_ts - SHIFT_HISTORY_DAYS * DAY
        daily = self.store.daily_sensor_means(start_ts, end_ts)
        return input_shift(daily.reindex(range(start_ts, end_ts, DAY)))  # a day without readings stays a gap

    def inputs_moved_since(self, since: datetime, end: datetime | None = None) -> bool:
        """Did the sensors' levels jump on any day from `since` (a change point, a few days of slack
        either side) to `end`, or stay moved since (`level_shift_since`, the slack's days as the cut)?
        A drift retrain asks what kind of change it answers: the jump is visible for about two weeks,
        the change point may be dated days after it, and a small step that stays shows only in a week's
        levels."""
        end_ts = _day_start(end)
        first = min(_day_start(since) - SHIFT_SLACK_DAYS * DAY, end_ts)
        start_ts = first - SHIFT_HISTORY_DAYS * DAY
        daily = self.store.daily_sensor_means(start_ts, end_ts).reindex(range(start_ts, end_ts, DAY))
        jumped = any(input_shift(daily.loc[day - SHIFT_HISTORY_DAYS * DAY:day - DAY]).shifted
                     for day in range(first + DAY, end_ts + DAY, DAY))
        last_cut = min(_day_start(since) + SHIFT_SLACK_DAYS * DAY, end_ts - SHIFT_RECENT_DAYS * DAY)
        return jumped or any(level_shift_since(daily.loc[cut - SHIFT_HISTORY_DAYS * DAY:], cut).shifted
                             for cut in range(first, last_cut + DAY, DAY))

    def check_features(self, model_type: str, end: datetime | None = None) -> InputShift | None:
        """Have the model's own inputs jumped, per feature (no labels needed)? None: no label events."""
        end_ts = _day_start(end)
        try:
            samples = self.store.training_samples(model_type, min_samples=1,
                                                  time_range=f"last_{SHIFT_HISTORY_DAYS}d",
                                                  end=datetime.fromtimestamp(end_ts, UTC))
        except InsufficientSamplesError:
            return None
        return input_shift(daily_feature_means(engineer_features(samples), end_ts), "feature")

    def _active(self, model_type: str) -> ModelVersion | None:
        """The active version's record (its baseline accuracy and training span), read once per check."""
        version = self.registry.get_active_version(model_type)
        return self.registry.get_version(model_type, version) if version else None

    def _verdict(self, spec: ModelSpec, record: ModelVersion | None, evidence: list[tuple[int | None, int, int]],
                 threshold: float | None) -> DriftMetrics:
        """The verdict on growing windows of (days, right predictions, labelled predictions) for `record`."""
        threshold = self.threshold if threshold is None else threshold
        version = record.version if record is not None else None
        days, hits, count = evidence[-1]
        current = hits / count if count else None
        common = {"model_type": spec.model_type, "model_version": version, "sample_count": count,
                  "min_samples": self.min_labelled, "threshold": threshold, "current_accuracy": current,
                  "window_days": days}
        if version is None:
            return DriftMetrics(status="no_active_model", accuracy_drift=None, requires_retraining=False,
                                baseline_accuracy=None, reason=f"{spec.model_type} has no active version yet",
                                **common)
        baseline = record.metrics.get("accuracy")
        if count < self.min_labelled:
            return DriftMetrics(
                status="insufficient_data", accuracy_drift=None, requires_retraining=False, baseline_accuracy=baseline,
                reason=f"insufficient data: {count} labelled predictions < {self.min_labelled} needed for a verdict",
                **common)
        usable = [(d, h, n) for d, h, n in evidence if n >= self.min_labelled]
        tests = [(drop_p_value(baseline, threshold, h, n), d, h, n) for d, h, n in usable]
        past = [t for t in tests if accuracy_drift(baseline, t[2] / t[3]) > threshold]
        # the window with the strongest evidence of a drop past the threshold (else: the most evidence)
        p_value, days, hits, count = min(past) if past else tests[-1]
        p_value = min(1.0, p_value * len(tests))  # Bonferroni over the windows looked at
        current = hits / count
        drift = accuracy_drift(baseline, current)
        common.update(current_accuracy=current, sample_count=count, window_days=days)
        where = f"last {days} d, n={count}" if days else f"n={count}"
        if p_value < DRIFT_ALPHA and drift > threshold:
            reason = (f"accuracy {current:.2%} vs baseline {baseline:.2%}: drift {drift:.3f} > threshold "
                      f"{threshold:g} ({where}, p={p_value:.2g})")
            return DriftMetrics(status="drift", accuracy_drift=drift, requires_retraining=True,
                                baseline_accuracy=baseline, reason=reason, p_value=p_value, **common)
        if drift > threshold:
            reason = (f"drift suspected, not yet significant: accuracy {current:.2%} vs baseline {baseline:.2%}, "
                      f"drift {drift:.3f} > threshold {threshold:g} ({where}, p={p_value:.2g} >= {DRIFT_ALPHA:g})")
            return DriftMetrics(status="insufficient_data", accuracy_drift=drift, requires_retraining=False,
                                baseline_accuracy=baseline, reason=reason, p_value=p_value, **common)
        reason = (f"accuracy {current:.2%} vs baseline {baseline:.2%}: drift {drift:.3f} <= threshold "
                  f"{threshold:g} ({where})")
        return DriftMetrics(status="stable", accuracy_drift=drift, requires_retraining=False,
                            baseline_accuracy=baseline, reason=reason, p_value=p_value, **common)


def _day_start(end: datetime | None) -> int:
    """The start of `end`'s day (epoch s): the shift tests read whole days before it."""
    return int((end or datetime.now(UTC)).timestamp()) // DAY * DAY


def daily_feature_means(features: FeatureSet, end_ts: int) -> pd.DataFrame:
    """Per whole day of the last `SHIFT_HISTORY_DAYS` before `end_ts`, the mean of every non-calendar
    feature over the day's label events (a day without events stays a gap)."""
    columns = [c for c in features.X.columns if c not in CALENDAR_FEATURES]
    daily = features.X[columns].groupby(features.ts // DAY * DAY).mean()
    return daily.reindex(range(end_ts - SHIFT_HISTORY_DAYS * DAY, end_ts, DAY))


def input_shift(daily: pd.DataFrame, noun: str = "sensor") -> InputShift:
    """The shift verdict on daily levels (rows: whole days, oldest first; columns: sensors or features)."""
    recent = SHIFT_RECENT_DAYS
    jumps = _jumps(daily, recent).dropna(how="all")
    null = jumps.iloc[:-recent]  # earlier jumps only: the latest block must not vouch for itself
    if len(null) < SHIFT_MIN_NULL_DAYS or jumps.empty:
        needed = recent + SHIFT_BEFORE_DAYS + SHIFT_MIN_NULL_DAYS
        return InputShift(None, None, {}, recent, f"insufficient data: {len(daily)} days of {noun} levels < {needed} "
                          f"needed to know how much the {noun}s' daily levels usually move")
    return _judged(_robust_z(jumps.iloc[-1], null), recent, noun, f"the last {recent} days' {noun} levels")


def level_shift_since(daily: pd.DataFrame, cut_ts: int, noun: str = "sensor") -> InputShift:
    """Have the levels stayed moved since `cut_ts` (a dated change)? The mean of up to
    `SHIFT_SINCE_DAYS` whole days from it (at least 2) against the 14 days before, judged like
    `input_shift` against the same comparison at every earlier day. `daily`: whole days, oldest
    first, ending where the evidence ends."""
    since = len(daily.loc[cut_ts:])
    days = min(since, SHIFT_SINCE_DAYS)
    if days < SHIFT_RECENT_DAYS:
        return InputShift(None, None, {}, days, f"insufficient data: {days} day(s) of {noun} levels since the change")
    moves = _jumps(daily, days).shift(-(days - 1))  # indexed by the block's first day, not its last
    null = moves.loc[:cut_ts - days * DAY].dropna(how="all")  # blocks that end before the change
    if len(null) < SHIFT_MIN_NULL_DAYS or cut_ts not in moves.index:
        return InputShift(None, None, {}, days, f"insufficient data: {len(null)} earlier {days}-day {noun} levels < "
                          f"{SHIFT_MIN_NULL_DAYS} needed to know how much they usually move")
    return _judged(_robust_z(moves.loc[cut_ts], null), since, noun, f"the {days} days' {noun} levels since the change")


def _jumps(daily: pd.DataFrame, days: int) -> pd.DataFrame:
    """Per day t: the mean of the `days` days ending with t minus the mean of the `SHIFT_BEFORE_DAYS`
    before them - the one comparison both shift tests make, indexed by the block's last day."""
    return daily.rolling(days).mean() - daily.shift(days).rolling(SHIFT_BEFORE_DAYS).mean()


def _robust_z(latest: pd.Series, null: pd.DataFrame) -> pd.Series:
    """`latest` per series in robust SDs (median, MAD) of the series' earlier values in `null`."""
    centre = null.median()
    spread = 1.4826 * (null - centre).abs().median()
    return ((latest - centre) / spread.where(spread > 0)).dropna()


def _judged(z: pd.Series, days_ago: int, noun: str, levels: str) -> InputShift:
    """The shift verdict on per-series robust z-scores of `levels` (what moved, for the reason): past
    `SHIFT_LIMIT` together, backed by a second series; the move began `days_ago` days ago."""
    per_sensor = {name: round(float(v), 2) for name, v in z.items()}
    score = float(np.sqrt(np.sum(np.square(z.to_numpy())))) if len(z) else 0.0
    moved = ", ".join(f"{n} {v:+.1f}" for n, v in sorted(per_sensor.items(), key=lambda kv: -abs(kv[1])) if abs(v) >= 2)
    corroborated = sum(abs(v) >= SHIFT_SECOND_SENSOR for v in per_sensor.values()) >= 2
    if score > SHIFT_LIMIT and corroborated:
        return InputShift(True, score, per_sensor, days_ago, f"inputs shifted: {levels} "
                          f"jumped {score:.1f} robust SDs (> {SHIFT_LIMIT:g}) beyond the usual: {moved}")
    if score > SHIFT_LIMIT:
        return InputShift(False, score, per_sensor, days_ago, f"inputs steady: only one {noun} jumped ({moved}); a "
                          f"real shift moves at least two past {SHIFT_SECOND_SENSOR:g}")
    return InputShift(False, score, per_sensor, days_ago,
                      f"inputs steady: {noun} jump score {score:.1f} <= {SHIFT_LIMIT:g}")


def locate_change(history: dict[int, tuple[int, int]], record: ModelVersion | None, end_ts: int,
                  threshold: float) -> tuple[int | None, bool]:
    """Days ago a version's accuracy dropped, and whether the drop came before its first logged day.

    A drop inside the log (`change_point`) leaves the log before it as good as the version was
    validated. When that older part - or, without a drop inside, the whole log - has itself drifted
    by the verdict's own rule, the drop came before the log: a log that drifted from its first day
    shows no drop inside it, or a spurious one where the drifted accuracy wobbled. Nothing was logged
    between the newest row the version saw and its log's start, so the drop is dated from that row:
    everything since is new to the version.

    How sure a split must be depends on that gap. A log that starts where the version's rows end
    (the plant app logs every prediction it serves) began as good as validated, so a split at 5 %
    dates the drop (BENCHMARKS.md: recovered 23 -> 24 of 34, live rollbacks 3 -> 1). A log that
    starts days later (the README walkthrough replays only the last days) may have drifted in the
    unlogged days, where the drop is as likely as at any wobble of the drifted accuracy, so a split
    there needs 1 %: a lucky day at the log's start (9 of 11 right, then 30 of 66) is no drop.
    """
    logged = [age for age, (_, n) in history.items() if n]
    seen = _seen_until(record) if record is not None else None
    unseen_days = math.ceil((end_ts - seen) / DAY) if seen is not None else 0
    gap = bool(logged) and unseen_days - (max(logged) + 1) >= LOG_GAP_DAYS
    change = change_point(history, CHANGE_ALPHA_AFTER_GAP if gap else CHANGE_ALPHA)
    baseline = record.metrics.get("accuracy") if record is not None else None
    if baseline is None or not logged:
        return change, False
    older = [hn for age, hn in history.items() if change is None or age >= change]
    hits, count = sum(h for h, _ in older), sum(n for _, n in older)
    if count < CHANGE_MIN_SIDE or drop_p_value(baseline, threshold, hits, count) >= DRIFT_ALPHA \
            or accuracy_drift(baseline, hits / count) <= threshold:  # the verdict's own test
        return change, False
    return max(max(logged) + 1, unseen_days), True


def _seen_until(record: ModelVersion) -> float | None:
    """When the newest row the version learned from or was validated on happened: recorded since
    versions record it; for older ones estimated (the hold-out follows the last training row, at the
    rate the training rows came)."""
    if record.seen_until_ts is not None:
        return record.seen_until_ts
    if record.train_start_ts is None or record.train_end_ts is None:
        return None
    span = record.train_end_ts - record.train_start_ts
    return record.train_end_ts + span * HOLDOUT_FRACTION / (1 - HOLDOUT_FRACTION)


def change_point(by_age: dict[int, tuple[int, int]], alpha: float = CHANGE_ALPHA) -> int | None:
    """Days ago the logged accuracy dropped: the split of the daily (hits, labelled) counts that a
    likelihood-ratio test (1 degree of freedom, at `alpha`) finds most convincing, with accuracy lower
    after it than before. None when the log shows no clear drop (see `locate_change` for a drop before
    it, and for the level)."""
    ages = sorted(by_age)
    total_h, total_n = sum(h for h, _ in by_age.values()), sum(n for _, n in by_age.values())
    best, best_stat = None, chi2.ppf(1 - alpha, 1)
    recent_h = recent_n = 0
    for age in ages:
        recent_h, recent_n = recent_h + by_age[age][0], recent_n + by_age[age][1]
        old_h, old_n = total_h - recent_h, total_n - recent_n
        if recent_n < CHANGE_MIN_SIDE or old_n < CHANGE_MIN_SIDE or recent_h / recent_n >= old_h / old_n:
            continue
        stat = 2 * (_loglik(recent_h, recent_n) + _loglik(old_h, old_n) - _loglik(total_h, total_n))
        if stat > best_stat:
            best, best_stat = age + 1, stat
    return best


def _loglik(hits: int, n: int) -> float:
    """Binomial log-likelihood of `hits` in `n` at its own rate."""
    if n == 0 or hits in (0, n):
        return 0.0
    p = hits / n
    return hits * np.log(p) + (n - hits) * np.log(1 - p)


#: Calendar and clock features differ between any two stretches of time by construction (the
#: season moves on, a week has other weekdays than a training tail), and so do the plant-age ones:
#: a cohort ages every day and a harvest and replanting resets it (stage, thermal time, the crop
#: calendar's expected stage). Never counted as a shift of the inputs.
CALENDAR_FEATURES = frozenset({"season_sin", "season_cos", "hour_sin", "hour_cos", "hour", "weekday", "is_weekend",
                               "days_since_planting", "days_in_stage", "age_share_of_cycle", "thermal_days",
                               "expected_stage_index", "expected_stage_thermal", "stage_position", "stage_index"})


def replay_predictions(store: PlantQueries, registry: ModelRegistry, model_type: str,
                       time_range: str = "last_14d", end: datetime | None = None) -> int:
    """Log what the active model predicts for the labelled events of a window, with their outcomes.

    This is what the plant app does in production (predict, later record the actual outcome);
    the demo, the benchmarks and the tests use it to fill the prediction log from generated data.
    """
    get_spec(model_type)
    validation.time_range(time_range)
    version = registry.get_active_version(model_type)
    if version is None:
        raise InvalidFieldError("model_type", model_type, "a model type with an active version")
    frame = predict_window(store, registry, model_type, version, time_range, end)
    if frame.empty:
        return 0
    store.write_frames({predictions.name: frame})
    return len(frame)


def _inputs_of(record: ModelVersion, features: FeatureSet) -> pd.DataFrame:
    """The columns `record` was trained on, in its order: a version trained before the catalog's inputs
    changed (a feature gained, or replaced) still predicts from its own until a retrain replaces it."""
    missing = [name for name in record.feature_names if name not in features.X.columns]
    if missing:
        raise RegistryError(f"{record.model_type} v{record.version} was trained on features this release no "
                            f"longer computes ({', '.join(missing)}); retrain it")
    return features.X[record.feature_names]


def predict_window(store: PlantQueries, registry: ModelRegistry, model_type: str, version: str,
                   time_range: str = "last_14d", end: datetime | None = None) -> pd.DataFrame:
    """What `version` predicts for the labelled events of a window, with their outcomes (rows of the
    prediction log). Features are computed exactly as training computed them: history features (a
    grower's usual watering hour, a unit's mean watering time, its growth so far) see the same stretch
    of history the version was trained with, not only the window - computing them from the window
    alone cost irrigation_duration 4-26 points with no drift at all.
    """
    spec = get_spec(model_type)
    validation.time_range(time_range)
    end = end or datetime.now(UTC)
    window = Window.last(time_range, end)
    record = registry.get_version(model_type, version)
    history_start = min(window.start_ts, record.train_start_ts or window.start_ts)
    history_days = max(1, -(-(window.end_ts - history_start) // DAY))
    samples = store.training_samples(model_type, min_samples=1, time_range=f"last_{history_days}d", end=end)
    features = engineer_features(samples, columns=record.feature_names or None)
    keep = features.ts >= window.start_ts
    if not keep.any():
        return pd.DataFrame(columns=["model_type", "model_version", "ts", "unit_id", "inputs_ref", "prediction",
                                     "actual"])
    predicted = registry.load_model(model_type, version).predict(_inputs_of(record, features)[keep])
    labels = samples.labels.sort_values("ts", kind="stable").reset_index(drop=True)[keep]
    return pd.DataFrame({
        "model_type": model_type, "model_version": version, "ts": features.ts[keep],
        "unit_id": labels["unit_id"].to_numpy(),
        "inputs_ref": [f"{spec.label_table}:{i}" for i in labels["id"]],
        "prediction": [str(p) for p in predicted], "actual": [str(a) for a in features.y[keep]],
    })


def paired_p_value(active_hits: np.ndarray, previous_hits: np.ndarray) -> float:
    """p of "the previous version is no better" on the same events: an exact one-sided sign test on
    the events exactly one of the two got right (McNemar's exact test). Pairing removes what both
    share - a hard week is hard for both - so a few dozen events tell two versions apart."""
    previous_only = int(np.sum(previous_hits & ~active_hits))
    active_only = int(np.sum(active_hits & ~previous_hits))
    if previous_only == 0:
        return 1.0
    return float(binom.sf(previous_only - 1, previous_only + active_only, 0.5))


def compare_served(store: PlantQueries, registry: ModelRegistry, model_type: str, end: datetime | None = None,
                   min_labelled: int = MIN_LABELLED) -> ServedComparison | None:
    """The active version and the one it replaced on the labelled events since the active one was
    trained, within `DRIFT_WINDOW`; None without a previous version or with too few events.

    Both are replayed (`predict_window`: features as training computes them) and paired by event.
    Like the drift verdict, the evidence is the window - of the last 1, 2, 4, 7, 14 days - that shows
    the previous version ahead most surely, Bonferroni-corrected: a drift retrain that learned the
    first days of a heat wave can be the better model while the wave lasts and the worse one after.
    """
    spec = get_spec(model_type)
    active = registry.get_active_version(model_type)
    previous = registry.get_previous_version(model_type, active) if active else None
    if active is None or previous is None:
        return None
    end = end or datetime.now(UTC)
    record = registry.get_version(model_type, active)
    since = _seen_until(record)
    longest = EVIDENCE_WINDOWS_DAYS[-1]
    if since is None or end.timestamp() - since >= longest * DAY:  # served two weeks: no longer new
        return None
    days = max(1, math.ceil((end.timestamp() - since) / DAY))
    try:
        served = predict_window(store, registry, model_type, active, f"last_{days}d", end)
        replaced = predict_window(store, registry, model_type, previous, f"last_{days}d", end)
    except (InsufficientSamplesError, RegistryError, ModelIntegrityError):
        return None  # no events yet, a version this release cannot run, or a file that fails its checksum
    both = served.merge(replaced[["inputs_ref", "prediction"]], on="inputs_ref", suffixes=("", "_previous"))
    both = both[both["ts"] >= since]
    if len(both) < min_labelled:
        return None
    age = (int(end.timestamp()) - both["ts"].to_numpy()) // DAY
    active_hits = _hits(spec, both["prediction"], both["actual"])
    previous_hits = _hits(spec, both["prediction_previous"], both["actual"])
    windows = [d for d in EVIDENCE_WINDOWS_DAYS if d < days] + [days]
    tests = []
    for window in windows:
        inside = age < window
        if inside.sum() >= min_labelled:
            tests.append((paired_p_value(active_hits[inside], previous_hits[inside]), window, inside))
    if not tests:
        return None
    p_value, window, inside = min(tests, key=lambda t: t[0])
    return ServedComparison(
        model_type=model_type, active_version=active, previous_version=previous, labelled=int(inside.sum()),
        active_accuracy=float(active_hits[inside].mean()), previous_accuracy=float(previous_hits[inside].mean()),
        p_value=min(1.0, p_value * len(tests)), window_days=window)


def _hits(spec: ModelSpec, predicted: pd.Series, actual: pd.Series) -> np.ndarray:
    """Per event, `training.hits_of` on the log's text columns (as `prediction_accuracy` reads them)."""
    kind = str if spec.task == "classification" else float
    return hits_of(spec, np.asarray(actual, dtype=kind), np.asarray(predicted, dtype=kind))
