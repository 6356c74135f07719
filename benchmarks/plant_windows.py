"""Do a drift retrain's few weeks hold enough plants? Windows scored on the units' and the twins' next week.

For the models whose labels follow plants (growth_stage, personalized_growth: one row per plant
check), as of days 11, 14, 18 and 21 of every world at 8 units (the drift, if any, starts on day 7),
the catalog's estimator is fitted on the last 14 or 21 days (what a drift retrain learns a week or
two into a drift: the weeks since the change), on the last 90 days with rows from before the drift
weighted down (`training.change_weights`: what `ModelSpec.drift_learns_whole_window` makes a drift
retrain learn) and on the last 90 days unweighted. Each fit is scored on the next 7 days of the
service's own units (mostly the same plants, a week older) and of the twin panel
(`drift_scenarios.panel_world`: units and plants it never saw). Stable worlds are included: a
drift retrain there is a false one, and what it learns still serves.

Run on demand (about a minute per world, never in CI):

    .venv/bin/python -m benchmarks.plant_windows [--models growth_stage] [--seeds 3] [--write]
"""

from __future__ import annotations

import collections
import statistics
import time
from datetime import timedelta

from retraining_pipelines.catalog import get_spec
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.features import engineer_features
from retraining_pipelines.plantdb import DAY
from retraining_pipelines.training import change_weights, validate_model

from .drift_scenarios import DRIFT_DAYS, END, WEEK, _day, publish, scenario_parser, worlds
from .drift_windows import DAYS, world_stores

MODELS = ("growth_stage", "personalized_growth")
#: name -> (days of rows before the as-of day, rows from before the drift weighted down)
WINDOWS = {"14": (14, False), "21": (21, False), "90w": (90, True), "90": (90, False)}

Scores = dict[str, tuple[float, float]]  # window -> (units' next week, twins' next week)


def score_windows(store: PlantDataStore, panel: PlantDataStore, model: str, day: int) -> Scores | None:
    """Each window's accuracy on the units' and the panel's next 7 days (None: too few rows)."""
    spec, as_of = get_spec(model), _day(day)
    ahead = as_of + timedelta(days=WEEK)
    features = engineer_features(store.training_samples(model, min_samples=1, time_range="last_120d", end=ahead))
    twins = engineer_features(panel.training_samples(model, min_samples=1, time_range="last_14d", end=ahead),
                              columns=list(features.X.columns))
    t = int(as_of.timestamp())
    units_next, twins_next = features.ts >= t, twins.ts >= t
    drift_start = int((END - timedelta(days=DRIFT_DAYS)).timestamp())
    weights = change_weights(features.ts, min(drift_start, t - WEEK * DAY))
    if units_next.sum() < 10 or twins_next.sum() < 10:
        return None
    scores: Scores = {}
    for name, (days, weighted) in WINDOWS.items():
        rows = (features.ts < t) & (features.ts >= t - days * DAY)
        if rows.sum() < 30:
            return None
        estimator = spec.build_estimator().fit(features.X[rows], features.y[rows],
                                               sample_weight=weights[rows] if weighted else None)
        scores[name] = (validate_model(estimator, features.X[units_next], features.y[units_next], spec)["accuracy"],
                        validate_model(estimator, twins.X[twins_next], twins.y[twins_next], spec)["accuracy"])
    return scores


def report(results: list[tuple[str, str, Scores]], units: int, seeds: int, seconds: float) -> str:
    lines = [f"### Windows on the units' and the twins' next week ({units} units, {seeds} seeds, days {DAYS})", "",
             f"{seconds / 60:.0f} min by `python -m benchmarks.plant_windows`; mean accuracy over (seed, day), "
             "the units' next 7 days / the twin panel's next 7 days; `90w`: rows from before the drift weigh "
             "`PRE_CHANGE_WEIGHT`.", "",
             "| model | scenario | cases | " + " | ".join(WINDOWS) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in WINDOWS) + " |"]
    groups: dict[tuple[str, str], list[Scores]] = collections.defaultdict(list)
    for model, scenario, scores in results:
        groups[(model, scenario)].append(scores)
        groups[(model, "all")].append(scores)
    for (model, scenario), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "all", kv[0][1])):
        cells = " | ".join(" / ".join(f"{statistics.mean(r[w][side] for r in rows):.3f}" for side in (0, 1))
                           for w in WINDOWS)
        lines.append(f"| {model} | {scenario} | {len(rows)} | {cells} |")
    return "\n".join([*lines, ""])


def main() -> None:
    parser = scenario_parser(__doc__)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    started, results = time.perf_counter(), []
    for scenario, seed in worlds(args.scenarios, args.seeds, args.first_seed):
        with world_stores(scenario, seed, args.units) as (store, panel):
            results += [(model, scenario, scores) for model in args.models for day in DAYS
                        if (scores := score_windows(store, panel, model, day)) is not None]
    publish(report(results, args.units, args.seeds, time.perf_counter() - started), args.write)


if __name__ == "__main__":
    main()
