"""Training and validation: fit the catalog's estimator, judge it on a time-based hold-out.

The hold-out is the most recent part of the window because that is what the model will face
next; a random split would leak tomorrow's weather into today's training and flatter every
model. Every model reports an `accuracy` (regressors: share of predictions within the catalog's
tolerance) so the spec's relative-improvement and 5 % rollback rules apply to all of them.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.metrics import f1_score, mean_absolute_error, r2_score
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from threadpoolctl import ThreadpoolController

from retraining_pipelines.catalog import ModelSpec, get_spec
from retraining_pipelines.errors import InvalidFieldError
from retraining_pipelines.features import FeatureSet

HOLDOUT_FRACTION = 0.2
MIN_HOLDOUT_ROWS = 10
#: After a drift whose start is known, what a training row from before it counts for. A hobby grower
#: logs ~5 irrigation outcomes a day: `min_samples` needs three weeks of rows, most of them from the
#: world that is gone. Weighted down (not dropped) they still teach what did not change. Measured on
#: 3 worlds x (3 irrigation models after `user_habits`; 4 models after `heat_wave` and `season`),
#: mean hold-out accuracy: weight 1 -> 0.494 / 0.806 / 0.846, 0.2 -> 0.544 / 0.803 / 0.847,
#: 0.05 -> 0.588 / 0.810 / 0.828: a low weight is what a changed habit needs, a changed climate
#: hardly cares.
PRE_CHANGE_WEIGHT = 0.1


@dataclass
class TimeSplit:
    """Older rows to train on, the most recent rows to validate on."""

    X_train: pd.DataFrame
    y_train: pd.Series
    X_holdout: pd.DataFrame
    y_holdout: pd.Series
    ts_train: np.ndarray
    ts_holdout: np.ndarray

    def holdout_after(self, ts: int | None) -> np.ndarray:
        """Mask of hold-out rows strictly after `ts` (all rows when `ts` is unknown)."""
        if ts is None:
            return np.ones(len(self.ts_holdout), dtype=bool)
        return self.ts_holdout > ts


@dataclass
class TrainedModel:
    """A fitted estimator and the facts about its training that the registry records."""

    model_type: str
    estimator: BaseEstimator | None  # None once handed to the gate without it (io_manager)
    feature_names: list[str]
    training_samples: int
    training_duration: float
    hyperparameters: dict[str, Any]
    data_fingerprint: str
    metrics: dict[str, float] = field(default_factory=dict)
    trigger: str = "manual"
    run_id: str | None = None
    version: str | None = None  # set once the registry has stored it
    #: Its predictions on the time split's hold-out, made once when it was trained (not stored in the
    #: registry): with them the gate needs no estimator in memory (see the IO manager's hand-over).
    holdout: Predictions | None = None
    train_start_ts: int | None = None  # the period its training rows cover (epoch s)
    train_end_ts: int | None = None
    #: The newest row it learned from or was validated on: everything after it is new to the version.
    seen_until_ts: int | None = None
    #: A drift retrain's recent window (`choose_window`): its hold-out is the newest fifth of the rows
    #: from then on. Recorded with the version, so a gate re-executed in another run splits alike.
    recent_from_ts: int | None = None
    #: Fitted again on its hold-out once judged (`learn_holdout`): only `holdout`, made before, can
    #: judge it - a gate in another run cannot (recorded with the version; see `promotion.run_gate`).
    learned_holdout: bool = False


def time_split(features: FeatureSet, holdout_fraction: float = HOLDOUT_FRACTION,
               recent_from_ts: int | None = None) -> TimeSplit:
    """Split by time: rows are in time order, so the tail is the hold-out.

    With `recent_from_ts` (a drift retrain's own window, `choose_window`), the hold-out is the newest
    fifth of the rows from then on, however far back the rows reach: the new world judges, the
    older rows only teach.
    """
    n = len(features)
    recent = n if recent_from_ts is None else int((features.ts >= recent_from_ts).sum())
    n_holdout = max(MIN_HOLDOUT_ROWS, round(recent * holdout_fraction))
    cut = n - n_holdout
    return TimeSplit(
        X_train=features.X.iloc[:cut],
        y_train=features.y.iloc[:cut],
        X_holdout=features.X.iloc[cut:],
        y_holdout=features.y.iloc[cut:],
        ts_train=features.ts[:cut],
        ts_holdout=features.ts[cut:],
    )


def threads_per_run(cores: int, runs_on_machine: int) -> int:
    """The thread rule: the cores divided among the retrains that may run on this machine at once.

    HistGradientBoosting fits with one OpenMP thread per core by default; two such fits on two cores
    run four threads that preempt each other, and each finishes later than if it had run alone on
    one core (measured in BENCHMARKS.md, *Scale-out*). RandomForest is pinned to one job in the
    catalog for the same reason.
    """
    return max(1, cores // max(1, runs_on_machine))


#: The math libraries this process had loaded, and how many modules it had then (`cap_threads`).
_libraries: tuple[ThreadpoolController, int] | None = None


def cap_threads(threads: int) -> None:
    """Cap this process's OpenMP and BLAS threads at `threads`, on every call.

    Finding the loaded math libraries is what costs (~3 ms, twice per retrain), and a library only
    arrives with an import: the libraries found are kept until the process has more modules. The cap
    itself is applied every time, so a limit set meanwhile by other code never survives a retrain.
    """
    global _libraries
    if _libraries is None or _libraries[1] != len(sys.modules):
        _libraries = ThreadpoolController(), len(sys.modules)
    _libraries[0].limit(limits=threads)


def change_weights(ts: np.ndarray, changed_at_ts: int | None) -> np.ndarray | None:
    """Sample weights after a drift that started at `changed_at_ts`: older rows weigh `PRE_CHANGE_WEIGHT`."""
    if changed_at_ts is None:
        return None
    return np.where(np.asarray(ts) >= changed_at_ts, 1.0, PRE_CHANGE_WEIGHT)


def train_model(features: FeatureSet, split: TimeSplit | None = None, changed_at_ts: int | None = None,
                from_ts: int | None = None) -> TrainedModel:
    """Fit the catalog's estimator on the training part of the time split (rows from before a known
    drift start weighted down, see `PRE_CHANGE_WEIGHT`; only rows from `from_ts` on, when given)."""
    spec = get_spec(features.model_type)
    split = split or time_split(features)
    rows = slice(None) if from_ts is None else split.ts_train >= from_ts
    X, y, ts = split.X_train[rows], split.y_train[rows], split.ts_train[rows]
    estimator = spec.build_estimator()
    seconds = _weighted_fit(estimator, X, y, ts, changed_at_ts)
    model = TrainedModel(
        model_type=spec.model_type,
        estimator=estimator,
        feature_names=list(features.feature_names),
        training_samples=len(y),
        training_duration=seconds,
        hyperparameters=dict(spec.hyperparameters),
        data_fingerprint=data_fingerprint(X, y),
        train_start_ts=int(ts.min()) if len(ts) else None,
        train_end_ts=int(ts.max()) if len(ts) else None,
        seen_until_ts=int(features.ts.max()) if len(features.ts) else None,
    )
    model.holdout = predict(estimator, split.X_holdout, spec)  # once: the gate scores from these
    model.metrics = metrics_of(model.holdout, split.y_holdout, spec)
    return model


def choose_window(features: FeatureSet, split: TimeSplit, changed_at_ts: int | None,
                  recent_from_ts: int) -> tuple[TrainedModel, str, dict[str, float]]:
    """A drift retrain's candidate: fitted on its recent window (the rows the evidence points at) and
    on the whole window (the job's `time_range`, rows from before the change weighted down), the one
    more accurate on the shared hold-out kept (the recent one on a tie).

    Which is better depends on the model, and no fixed rule gets both right: at a hobby grower's ~5
    irrigation outcomes a day, three months of rows still teach what did not change (irrigation_duration
    on the twin panel 0.88 from the recent window, 0.94 from 90 days), while disease after a heat wave
    is better served by the weeks since (0.76 against 0.74); the hold-out, the newest fifth of the
    recent window, tells them apart. The drift policy asks for it only where the sensors moved with the
    change: where the label itself moved (habits, a cultivar) the older rows teach the old answer
    (BENCHMARKS.md, "Which window" and "The window from what changed"). Returns the candidate kept, its
    window's name ("recent" or "whole") and each candidate's hold-out accuracy.
    """
    if not (split.ts_train >= recent_from_ts).any():
        raise InvalidFieldError("recent_from", datetime.fromtimestamp(recent_from_ts, UTC).isoformat(),
                                "a moment before the window's newest training rows (a drift retrain's recent window)")
    candidates = {"recent": train_model(features, split, changed_at_ts, from_ts=recent_from_ts)}
    if len(split.ts_train) and split.ts_train.min() < recent_from_ts:  # else the two are one window
        candidates["whole"] = train_model(features, split, changed_at_ts)
    scores = {name: model.metrics["accuracy"] for name, model in candidates.items()}
    best = kept_window(scores)
    candidates[best].recent_from_ts = recent_from_ts
    return candidates[best], best, scores


def kept_window(holdout_accuracy: dict[str, float]) -> str:
    """Which of a drift retrain's candidates `choose_window` keeps: the more accurate on the shared
    hold-out, "recent" on a tie (it learned the rows the evidence points at)."""
    return max(holdout_accuracy, key=lambda name: (holdout_accuracy[name], name == "recent"))


def learn_holdout(model: TrainedModel, features: FeatureSet, changed_at_ts: int | None = None) -> None:
    """Fit the candidate again on its whole window, hold-out included, once the hold-out has judged it.

    After a drift the hold-out is the newest fifth of the window: for a retrain made days after the
    change, a large share of all the rows from the new world, and a served model that never learned
    them is that much further from it. The recorded metrics and the gate's hold-out predictions stay
    those of the fit without them (the same estimator on fewer rows of the same world: a cautious
    estimate). `train_end_ts` moves to the window's end, so a later gate judges this version only on
    rows after everything it learned. A second fit costs time, which drift retrains' short windows
    make small; scheduled retrains on long windows gain little from their newest fifth and skip it.
    """
    if model.estimator is None or not len(features):
        return
    rows = features.ts >= (model.train_start_ts or 0)  # its own window: the recent one stays recent
    X, y = features.X[rows], features.y[rows]
    model.training_duration += _weighted_fit(model.estimator, X, y, features.ts[rows], changed_at_ts)
    model.training_samples = len(y)
    model.data_fingerprint = data_fingerprint(X, y)
    model.train_end_ts = model.seen_until_ts  # it learned everything it was validated on
    model.learned_holdout = True


def _weighted_fit(estimator: BaseEstimator, X: pd.DataFrame, y: pd.Series, ts: np.ndarray,
                  changed_at_ts: int | None) -> float:
    """Fit with the drift's weights (`change_weights`); returns the seconds it took."""
    started = time.perf_counter()
    estimator.fit(X, y, sample_weight=change_weights(ts, changed_at_ts))
    return time.perf_counter() - started


def data_fingerprint(X: pd.DataFrame, y: pd.Series) -> str:
    """SHA-256 of the exact training rows, so two versions can be told apart by their data."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    digest.update(pd.util.hash_pandas_object(y.astype(str), index=False).to_numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Predictions:
    """What a model said on some rows: enough to compute every catalog metric on any subset of them.

    The gate scores a candidate from these instead of from the model, so a forest of hundreds of MB
    need not stay in memory while the champion is loaded beside it.
    """

    predicted: np.ndarray
    top3: np.ndarray | None = None  # the 3 most probable classes per row (for `top3_accuracy`)

    def subset(self, rows: np.ndarray) -> Predictions:
        return Predictions(self.predicted[rows], None if self.top3 is None else self.top3[rows])


def predict(estimator: BaseEstimator, X: pd.DataFrame, spec: ModelSpec) -> Predictions:
    """The estimator's predictions on `X`, with what the catalog's metrics need beyond them."""
    top3 = top_k_classes(estimator, X, 3) if "top3_accuracy" in spec.extra_metrics else None
    return Predictions(np.asarray(estimator.predict(X)), top3)


def metrics_of(predictions: Predictions, y: pd.Series, spec: ModelSpec) -> dict[str, float]:
    """The catalog's metrics of predictions against the truth `y` (same rows, same order)."""
    if spec.task == "classification":
        return _classification_metrics(predictions, np.asarray(y), spec)
    return regression_metrics(np.asarray(y, dtype=float), predictions.predicted.astype(float), spec)


def validate_model(estimator: BaseEstimator, X: pd.DataFrame, y: pd.Series, spec: ModelSpec) -> dict[str, float]:
    """The spec's `validate_model`: the catalog's metrics on a hold-out set."""
    return metrics_of(predict(estimator, X, spec), y, spec)


def naive_baseline(y_train: pd.Series, y_holdout: pd.Series, spec: ModelSpec) -> dict[str, float]:
    """What a model that learned nothing scores: majority class, or the training mean."""
    if spec.task == "classification":
        majority = y_train.value_counts().idxmax()
        predicted = np.full(len(y_holdout), majority, dtype=object)
        truth = y_holdout.to_numpy(dtype=object)
        return {"accuracy": float(np.mean(predicted == truth))}
    mean = float(np.mean(y_train))
    return regression_metrics(np.asarray(y_holdout, dtype=float), np.full(len(y_holdout), mean), spec)


#: A "rule" on one input: a tree this small is what a grower could write down by hand.
RULE_LEAVES = 8
#: ...learnt from the most recent training rows only: 8 leaves need no more, and every retrain pays
#: for one rule per input (on 9k climate rows the full set cost 15 % of the model's own fit).
RULE_MAX_ROWS = 2000


def single_feature_rules(split: TimeSplit, spec: ModelSpec) -> dict[str, float]:
    """Hold-out accuracy of the best small rule on each input alone (e.g. "stage = the crop calendar's
    stage"). A model that does not beat its best input alone adds nothing over that input: the
    catalog's estimators are measured against this (benchmarks/model_choice.py, tests).

    Every retrain's gate pays for one rule per input, so the work is done once, not per rule (issue
    11): the inputs come out of pandas once, class labels (strings) are numbered once - scikit-learn
    would sort them three times per tree, most of a small tree's time - and each rule is fitted on a
    plain float32 column with its gaps filled, what the tree's own input check would make of it, so
    that check is skipped. The same trees and scores (tests compare with plain scikit-learn).
    """
    tree = DecisionTreeClassifier if spec.task == "classification" else DecisionTreeRegressor
    train = split.X_train.tail(RULE_MAX_ROWS).to_numpy(dtype=np.float64)  # at most 2,000 rows
    y, truth = _numbered(spec, np.asarray(split.y_train.tail(RULE_MAX_ROWS)), np.asarray(split.y_holdout))
    scores = {}
    for i, column in enumerate(split.X_train.columns):
        known = ~np.isnan(train[:, i])
        if not known.any():
            continue
        fill = float(np.median(train[known, i]))
        rule = tree(max_leaf_nodes=RULE_LEAVES, random_state=0).fit(_filled(train[:, i], fill), y, check_input=False)
        holdout = split.X_holdout[column].to_numpy(dtype=np.float64)  # a column at a time: a 1M-row hold-out is big
        scores[column] = accuracy_of(spec, truth, rule.predict(_filled(holdout, fill), check_input=False))
    return scores


def _numbered(spec: ModelSpec, y: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Classes as the numbers scikit-learn gives them (their sorted order); a hold-out class the
    training rows never had is -1, which no rule predicts. Regression targets pass through."""
    if spec.task != "classification":
        return y, truth
    classes, numbers = np.unique(y, return_inverse=True)
    index = {label: i for i, label in enumerate(classes.tolist())}
    return numbers, np.array([index.get(label, -1) for label in truth.tolist()], dtype=np.int64)


def _filled(column: np.ndarray, fill: float) -> np.ndarray:
    """One input as a rule sees it: a single feature column, gaps filled with the training median, in
    the float32 rows scikit-learn's trees compute on."""
    return np.ascontiguousarray(np.where(np.isnan(column), fill, column).reshape(-1, 1), dtype=np.float32)


def best_single_feature(split: TimeSplit, spec: ModelSpec) -> tuple[str, float]:
    """The input whose rule alone scores best on the hold-out, and that accuracy."""
    scores = single_feature_rules(split, spec)
    if not scores:
        return "", 0.0
    best = max(scores, key=scores.__getitem__)
    return best, scores[best]


def hits_of(spec: ModelSpec, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per prediction, whether the catalog counts it right: the class, or within the regression tolerance."""
    if spec.task == "classification":
        return np.asarray(truth) == np.asarray(predicted)
    return np.abs(np.asarray(predicted, dtype=float) - np.asarray(truth).astype(float)) <= spec.accuracy_tolerance


def accuracy_of(spec: ModelSpec, truth: np.ndarray, predicted: np.ndarray) -> float:
    """The catalog's `accuracy`: the share of `hits_of`."""
    return float(np.mean(hits_of(spec, truth, predicted)))


def _classification_metrics(predictions: Predictions, truth: np.ndarray, spec: ModelSpec) -> dict[str, float]:
    predicted = predictions.predicted
    metrics = {
        "accuracy": accuracy_of(spec, truth, predicted),
        "f1_score": float(f1_score(truth, predicted, average="macro", zero_division=0)),
    }
    if "top3_accuracy" in spec.extra_metrics and predictions.top3 is not None:
        metrics["top3_accuracy"] = top_k_accuracy(predictions.top3, truth)
    return metrics


def top_k_classes(estimator: BaseEstimator, X: pd.DataFrame, k: int) -> np.ndarray:
    """The k most probable classes per row, most probable first."""
    proba = estimator.predict_proba(X)
    return np.asarray(estimator.classes_)[np.argsort(proba, axis=1)[:, ::-1][:, :k]]


def top_k_accuracy(top: np.ndarray, truth: np.ndarray) -> float:
    """Share of rows whose true class is among their top classes; unseen classes count as misses."""
    return float(np.mean([t in row for t, row in zip(truth, top, strict=True)]))


def regression_metrics(truth: np.ndarray, predicted: np.ndarray, spec: ModelSpec) -> dict[str, float]:
    error = predicted - truth
    metrics = {
        "accuracy": accuracy_of(spec, truth, predicted),
        "r2": float(r2_score(truth, predicted)),
        "mae": float(mean_absolute_error(truth, predicted)),
        "rmse": float(np.sqrt(np.mean(error**2))),
    }
    if "mape" in spec.extra_metrics:
        nonzero = np.abs(truth) > 1e-9
        metrics["mape"] = float(np.mean(np.abs(error[nonzero]) / np.abs(truth[nonzero])))
    return metrics
