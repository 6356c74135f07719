"""Which estimator each model type should use, and whether it beats what needs no model at all.

For every model type, on generated worlds (a hobby grower's 8 units and a greenhouse's 40, several
seeds, a stable world and one where the growers' habits change three weeks before the end), each
candidate estimator is fitted on the catalog's features with the pipeline's own time split and
judged on the hold-out by the catalog's accuracy. Beside them: the naive baseline (majority class /
training mean) and the best single-feature rule (`training.single_feature_rules`). The catalog's
choice is the estimator with the best median accuracy unless another is within a point and fits
clearly faster (a Raspberry Pi retrains these); fits run on one thread each, as the thread rule
gives them when two retrains share a 2-core machine. Run on demand (a few minutes, never in CI):

    .venv/bin/python -m benchmarks.model_choice --units 8 40 --seeds 3 [--write]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from threadpoolctl import threadpool_limits

from benchmarks import LATE_AUTUMN as END
from retraining_pipelines.catalog import MODEL_TYPES, get_spec
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.features import engineer_features
from retraining_pipelines.generator import DriftScenario, GeneratorConfig, generate
from retraining_pipelines.training import naive_baseline, single_feature_rules, time_split, validate_model

REPORT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
_TREES = {"n_estimators": 150, "max_depth": 14, "min_samples_leaf": 2, "n_jobs": 1, "random_state": 0}
_BOOST = {"max_iter": 200, "learning_rate": 0.08, "max_leaf_nodes": 31, "random_state": 0}
CANDIDATES: dict[str, dict[str, type[BaseEstimator]]] = {
    "classification": {"RandomForest": RandomForestClassifier, "ExtraTrees": ExtraTreesClassifier,
                       "HistGradientBoosting": HistGradientBoostingClassifier},
    "regression": {"RandomForest": RandomForestRegressor, "ExtraTrees": ExtraTreesRegressor,
                   "HistGradientBoosting": HistGradientBoostingRegressor},
}


def candidate(task: str, name: str, catalog_estimator: str, catalog_params: dict) -> BaseEstimator:
    """The catalog's own parameters for its own estimator; shared defaults for the alternatives."""
    cls = CANDIDATES[task][name]
    if cls.__name__ == catalog_estimator:
        return cls(**catalog_params)
    return cls(**(_BOOST if name == "HistGradientBoosting" else _TREES))


def worlds(units: list[int], seeds: int) -> list[tuple[str, GeneratorConfig]]:
    out = []
    for n in units:
        for seed in range(1, seeds + 1):
            base = GeneratorConfig(end=END, days=120, units=n, seed=seed)
            out.append((f"{n} units, stable, seed {seed}", base))
            habits = DriftScenario("user_habits", END - timedelta(days=21))
            out.append((f"{n} units, user_habits, seed {seed}", GeneratorConfig(
                end=END, days=120, units=n, seed=seed, drift=(habits,))))
    return out


def measure(units: list[int], seeds: int, models: tuple[str, ...] = MODEL_TYPES) -> dict[str, dict[str, list[float]]]:
    """model type -> column -> one value per world (accuracy, or seconds for `fit:*`)."""
    results: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for label, config in worlds(units, seeds):
        store = PlantDataStore(database_url=f"sqlite:///{tempfile.mkdtemp()}/plant.sqlite")
        store.write_frames(generate(config).tables())
        for model_type in models:
            spec = get_spec(model_type)
            # the data after a change are the harder test: train on the last 30 days as a drift retrain does
            window = "last_30d" if "user_habits" in label else "last_120d"
            split = time_split(engineer_features(store.training_samples(model_type, time_range=window, end=END)))
            row = results[model_type]
            for name in CANDIDATES[spec.task]:
                estimator = candidate(spec.task, name, spec.estimator, dict(spec.hyperparameters))
                with threadpool_limits(limits=1):  # one core each, as the thread rule gives two runs on 2 cores
                    started = time.perf_counter()
                    estimator.fit(split.X_train, split.y_train)
                    row[f"fit:{name}"].append(time.perf_counter() - started)
                row[name].append(validate_model(estimator, split.X_holdout, split.y_holdout, spec)["accuracy"])
            row["naive"].append(naive_baseline(split.y_train, split.y_holdout, spec)["accuracy"])
            rules = single_feature_rules(split, spec)
            best = max(rules, key=rules.get)
            row["best single feature"].append(rules[best])
            row.setdefault("rule features", []).append(best)  # type: ignore[arg-type]
            print(f"{label:32s} {model_type:22s} " + " ".join(
                f"{k}={v[-1]:.3f}" for k, v in row.items() if k != "rule features"), flush=True)
    return results


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.2f}–{max(values):.2f})"


def table(results: dict[str, dict[str, list[float]]], elapsed: float, argv: str) -> str:
    names = list(CANDIDATES["classification"])
    lines = [
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} min by `{argv}`. "
        "Hold-out accuracy by the catalog's definition, median (min–max) over the worlds; fit time median.",
        "",
        "| model | catalog | " + " | ".join(names) + " | naive | best single feature (which) | fit s: "
        + " / ".join(names) + " |",
        "| --- " * (len(names) + 5) + "|",
    ]
    for model_type, row in results.items():
        spec = get_spec(model_type)
        rule_features = sorted(set(row["rule features"]))  # type: ignore[arg-type]
        fits = " / ".join(f"{statistics.median(row[f'fit:{n}']):.2f}" for n in names)
        lines.append(f"| {model_type} | {spec.estimator} | " + " | ".join(_cell(row[n]) for n in names)
                     + f" | {_cell(row['naive'])} | {_cell(row['best single feature'])} "
                       f"({', '.join(rule_features)}) | {fits} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, nargs="+", default=[8, 40])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", nargs="+", choices=MODEL_TYPES, default=list(MODEL_TYPES))
    parser.add_argument("--write", action="store_true", help=f"append the table to {REPORT.name}")
    args = parser.parse_args()
    started = time.perf_counter()
    results = measure(args.units, args.seeds, tuple(args.models))
    argv = f"python -m benchmarks.model_choice --units {' '.join(map(str, args.units))} --seeds {args.seeds}"
    if tuple(args.models) != MODEL_TYPES:
        argv += f" --models {' '.join(args.models)}"
    report = table(results, time.perf_counter() - started, argv)
    print(report)
    if args.write:
        with open(REPORT, "a", encoding="utf-8") as fh:
            fh.write("\n" + report)


if __name__ == "__main__":
    main()
