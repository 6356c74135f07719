"""How a model left alone ages through the autumn, for the catalog's inputs and alternatives.

Stable generated worlds (8 units, no drift) end late in November, so the weeks after training are
colder than the training window. For each input set, a model is fitted with the catalog's
estimator on the world's 92 days before the last four weeks - like the benchmark loop's day-0
version - and scored on each of those four weeks; "hold-out" is the same model fitted without the last two
weeks before day 0 and scored on them. The alternatives are other columns the feature builder
computes (`engineer_features(columns=)`), optionally with a log target. Run on demand (a minute or
two per model, never in CI):

    .venv/bin/python -m benchmarks.frozen_weeks [--model personalized_growth] [--seeds 6]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from datetime import timedelta

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from threadpoolctl import threadpool_limits

from benchmarks import LATE_AUTUMN as END
from retraining_pipelines.catalog import MODEL_TYPES, get_spec
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.features import engineer_features
from retraining_pipelines.generator import GeneratorConfig, generate
from retraining_pipelines.plantdb import DAY, TrainingSamples
from retraining_pipelines.training import validate_model

WEEKS = 4
#: Input sets tried for personalized_growth besides the catalog's (see BENCHMARKS.md).
ALTERNATIVES = {
    "personalized_growth": {
        "temperature, signed deviation, VPD (before)": [
            "temperature_mean_24h", "vpd_mean_24h", "light_hours_24h", "co2", "temperature_deviation",
            "stage_index", "days_since_planting", "unit_growth_history"],
        "unsigned deviation in place of the signed one": [
            "temperature_mean_24h", "vpd_mean_24h", "light_hours_24h", "co2", "temperature_distance",
            "stage_index", "days_since_planting", "unit_growth_history"],
        "distances, without days_since_planting": [
            "temperature_distance", "vpd_distance", "light_hours_24h", "co2", "stage_index",
            "unit_growth_history"],
    },
}


def world(model_type: str, seed: int) -> TrainingSamples:
    store = PlantDataStore(database_url=f"sqlite:///{tempfile.mkdtemp()}/plant.sqlite")
    store.write_frames(generate(GeneratorConfig(end=END, days=120, units=8, seed=seed)).tables())
    return store.training_samples(model_type, min_samples=1, time_range="last_120d", end=END)


def scores(samples: TrainingSamples, columns: list[str], log_target: bool) -> list[float]:
    """[hold-out, week 1, ..., week 4] accuracy in one stable world."""
    spec = get_spec(samples.model_type)
    f = engineer_features(samples, columns=columns)
    day0 = int((END - timedelta(days=WEEKS * 7)).timestamp())
    train = f.ts < day0
    hold = train & (f.ts >= day0 - 14 * DAY)

    def fit(rows: np.ndarray):
        estimator = spec.build_estimator()
        if log_target:
            estimator = TransformedTargetRegressor(estimator, func=np.log1p, inverse_func=np.expm1)
        with threadpool_limits(limits=1):
            return estimator.fit(f.X[rows], f.y[rows])

    out = [validate_model(fit(train & ~hold), f.X[hold], f.y[hold], spec)["accuracy"]]
    frozen = fit(train)
    for week in range(WEEKS):
        rows = (f.ts >= day0 + week * 7 * DAY) & (f.ts < day0 + (week + 1) * 7 * DAY)
        out.append(validate_model(frozen, f.X[rows], f.y[rows], spec)["accuracy"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODEL_TYPES, default="personalized_growth")
    parser.add_argument("--seeds", type=int, default=6)
    args = parser.parse_args()
    spec = get_spec(args.model)
    sets = {"the catalog's": list(spec.features), **ALTERNATIVES.get(args.model, {})}
    targets = (False, True) if spec.task == "regression" else (False,)
    print(f"{args.model}, {args.seeds} stable worlds at 8 units ending {END:%Y-%m-%d}; mean accuracy\n")
    print("| inputs | target | hold-out | " + " | ".join(f"week {w + 1}" for w in range(WEEKS)) + " |")
    print("| --- " * (WEEKS + 3) + "|")
    worlds = [world(args.model, seed) for seed in range(1, args.seeds + 1)]
    for name, columns in sets.items():
        for log_target in targets:
            rows = [scores(samples, columns, log_target) for samples in worlds]
            means = [statistics.mean(column) for column in zip(*rows, strict=True)]
            print(f"| {name} | {'log ' if log_target else ''}{spec.target} | "
                  + " | ".join(f"{m:.3f}" for m in means) + " |", flush=True)


if __name__ == "__main__":
    main()
