"""Which window should a drift retrain learn from? Measured offline, on the twin panel.

For every drifted world (generator scenario x seed, 8 units) and every model type, as of a few days
after the drift's start (`DAYS`, the drift loop's day indices: the drift starts on day 7), a
candidate is fitted on each window below, every one judged on the same hold-out - the newest fifth
of the service's recent window, as `drift_policy` dates it (here from the drift's true start) - and
then refitted on all its rows and scored on the twin panel's next 7 days (`drift_scenarios.panel_world`:
units the candidate never saw, 4-5x the labels). Windows (rows before the drift weighted by
`training.PRE_CHANGE_WEIGHT` where marked "w"):

* `recent`: what a drift retrain learns from (`drift_policy.retrain_time_range`): the days since the
  change stretched by the hold-out share, at least 7, widened to the catalog's `min_samples` (w);
* `since`: the rows since the drift alone; `30`, `30w`, `90`, `90w`: the last 30 or 90 days;
* `chosen`: `recent` or `90w`, whichever scored better on the hold-out (`training.kept_window`) - a rule
  measured in the drift loop and not taken (BENCHMARKS.md, "Which window a drift retrain learns from").

Run on demand (minutes per world, never in CI):

    .venv/bin/python -m benchmarks.drift_windows --seeds 3 [--scenarios heat_wave ...] [--write]
"""

from __future__ import annotations

import collections
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from retraining_pipelines import validation
from retraining_pipelines.catalog import MODEL_TYPES, get_spec
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.drift import DriftMetrics
from retraining_pipelines.drift_policy import retrain_time_range
from retraining_pipelines.errors import InsufficientSamplesError
from retraining_pipelines.features import engineer_features
from retraining_pipelines.generator import DriftScenario, GeneratorConfig, generate
from retraining_pipelines.jobstore import DRIFT_TIME_RANGE, StoredJob, validate_job
from retraining_pipelines.plantdb import DAY
from retraining_pipelines.training import HOLDOUT_FRACTION, change_weights, kept_window, validate_model

from .drift_scenarios import DRIFT_DAYS, END, WEEK, WORLD_DAYS, _day, panel_world, publish, scenario_parser, worlds

WINDOWS = ("recent", "since", "30", "30w", "90", "90w")
DAYS = (11, 14, 18, 21)
PANEL = 32


def _recent_days(store: PlantDataStore, model: str, as_of: datetime, start: datetime) -> int:
    """The recent window, in days, by the service's own rule (`drift_policy.retrain_time_range`, the
    seeded on_drift job's ceiling) for a change dated at the drift's true start."""
    spec = get_spec(model)
    job = StoredJob(**asdict(validate_job(model, "on_drift", drift_threshold=0.15, min_samples=spec.min_samples,
                                          time_range=DRIFT_TIME_RANGE)))
    metrics = DriftMetrics(model, None, "drift", None, True, None, None, 0, spec.min_samples, 0.15,
                           "the drift's true start", change_days_ago=(as_of - start).days)
    return validation.time_range(retrain_time_range(job, metrics, 1, store, as_of)) // DAY


def score_windows(store: PlantDataStore, panel: PlantDataStore, model: str, day: int) -> dict[str, float] | None:
    """Each window's hold-out and panel accuracy for one model as of one day (None: too few rows)."""
    spec, as_of, start = get_spec(model), _day(day), END - timedelta(days=DRIFT_DAYS)
    try:
        features = engineer_features(store.training_samples(model, min_samples=1, time_range="last_90d", end=as_of))
        judge = engineer_features(panel.training_samples(model, min_samples=1, time_range="last_14d",
                                                         end=as_of + timedelta(days=WEEK)),
                                  columns=list(features.X.columns))
    except InsufficientSamplesError:
        return None
    as_of_ts, start_ts = int(as_of.timestamp()), int(start.timestamp())
    test = judge.ts >= as_of_ts
    if test.sum() < 10 or (features.ts >= start_ts).sum() < 20:
        return None
    recent = features.ts >= as_of_ts - _recent_days(store, model, as_of, start) * DAY
    cut = np.sort(features.ts[recent])[int(recent.sum() * (1 - HOLDOUT_FRACTION))]
    rows = {"recent": (recent, True), "since": (features.ts >= start_ts, False),
            "30": (features.ts >= as_of_ts - 30 * DAY, False), "30w": (features.ts >= as_of_ts - 30 * DAY, True),
            "90": (features.ts >= 0, False), "90w": (features.ts >= 0, True)}
    scores: dict[str, float] = {}
    weights = change_weights(features.ts, start_ts)
    for name, (mask, weighted) in rows.items():
        train = mask & (features.ts < cut)
        if train.sum() < 5:
            return None
        for key, fit_rows, X, y in ((f"{name}_holdout", train, features.X[features.ts >= cut],
                                     features.y[features.ts >= cut]),
                                    (name, mask, judge.X[test], judge.y[test])):
            estimator = spec.build_estimator().fit(features.X[fit_rows], features.y[fit_rows],
                                                   sample_weight=weights[fit_rows] if weighted else None)
            scores[key] = validate_model(estimator, X, y, spec)["accuracy"]
    scores["chosen"] = scores[kept_window({"recent": scores["recent_holdout"], "90w": scores["90w_holdout"]})]
    return scores


@contextlib.contextmanager
def world_stores(scenario: str, seed: int, units: int) -> Iterator[tuple[PlantDataStore, PlantDataStore]]:
    """A generated world's store and its twin panel's (`drift_scenarios.panel_world`), in a temporary
    directory; `stable` is the world without a drift."""
    drift = () if scenario == "stable" else (DriftScenario(scenario, END - timedelta(days=DRIFT_DAYS)),)
    config = GeneratorConfig(end=END, days=WORLD_DAYS, units=units, seed=seed, drift=drift)
    with tempfile.TemporaryDirectory(prefix="drift-windows-") as tmp:
        store = PlantDataStore(database_url=f"sqlite:///{Path(tmp) / 'plant.sqlite'}")
        store.write_frames(generate(config).tables())
        panel = PlantDataStore(database_url=f"sqlite:///{Path(tmp) / 'panel.sqlite'}")
        panel.write_frames(panel_world(config, PANEL))
        yield store, panel


def run_world(scenario: str, seed: int, units: int, days: tuple[int, ...]) -> list[tuple[str, dict[str, float]]]:
    with world_stores(scenario, seed, units) as (store, panel):
        return [(model, scores) for model in MODEL_TYPES for day in days
                if (scores := score_windows(store, panel, model, day)) is not None]


def report(results: list[tuple[str, dict[str, float]]], units: int, seeds: int, seconds: float) -> str:
    by_model: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
    for model, scores in results:
        by_model[model].append(scores)
    names = (*WINDOWS, "chosen")
    lines = [f"### Which window, on the twin panel's next 7 days ({units} units, {seeds} seeds, days {DAYS})", "",
             f"{seconds / 60:.0f} min by `python -m benchmarks.drift_windows`; mean accuracy per model over "
             "(scenario, seed, day); `chosen` is the rule (`recent` or `90w`, by the hold-out).", "",
             "| model | cases | " + " | ".join(names) + " | 90w beats recent |",
             "| --- | --- | " + " | ".join("---" for _ in names) + " | --- |"]
    for model in MODEL_TYPES:
        rows = by_model.get(model)
        if not rows:
            continue
        means = " | ".join(f"{statistics.mean(r[n] for r in rows):.3f}" for n in names)
        wins = sum(r["90w"] > r["recent"] for r in rows)
        lines.append(f"| {model} | {len(rows)} | {means} | {wins}/{len(rows)} |")
    return "\n".join([*lines, ""])


def main() -> None:
    parser = scenario_parser(__doc__)
    args = parser.parse_args()
    started, results = time.perf_counter(), []
    for scenario, seed in worlds([s for s in args.scenarios if s != "stable"], args.seeds, args.first_seed):
        results += run_world(scenario, seed, args.units, DAYS)
    publish(report(results, args.units, args.seeds, time.perf_counter() - started), args.write)


if __name__ == "__main__":
    main()
