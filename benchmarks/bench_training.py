"""Benchmark: what the pipeline costs over bare scikit-learn, measured in the same run.

Run on demand (not in CI):  .venv/bin/python -m benchmarks.bench_training [--days 180 --units 12]

For every model type it measures
  * baseline: `estimator.fit` on an already-built feature matrix (bare scikit-learn),
  * pipeline: one Dagster materialization of the partition (SQL fetch, features, fit, validate,
    registry write, promotion gate),
and reports pipeline / baseline for wall time and for peak traced memory (tracemalloc, which
numpy and scikit-learn allocations report to). For the gradient-boosted models it also reports
GradientBoosting / HistGradientBoosting fit time and accuracy, the evidence for the catalog's
choice. Ratios, not seconds, because this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime

import dagster as dg
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor

from retraining_pipelines.assets import RETRAIN_ASSETS
from retraining_pipelines.catalog import MODEL_TYPES, get_spec
from retraining_pipelines.code_location import default_resources
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.features import engineer_features
from retraining_pipelines.generator import GeneratorConfig, generate
from retraining_pipelines.training import time_split, validate_model


def _best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--units", type=int, default=12)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp()
    store = PlantDataStore(database_url=f"sqlite:///{workdir}/plant.sqlite")
    started = time.perf_counter()
    data = generate(GeneratorConfig(end=datetime.now(UTC), days=args.days, units=args.units))
    generated = time.perf_counter() - started
    store.write_frames(data.tables())
    print(f"generated {len(data.sensor_readings):,} readings in {generated:.2f}s")
    header = ("model type", "rows", "time ratio", "memory ratio", "GB/HGB fit", "acc HGB", "acc GB")
    print("{:22s} {:>6s} {:>11s} {:>13s} {:>11s} {:>8s} {:>7s}".format(*header))
    window = f"last_{args.days}d"
    with dg.instance_for_test() as instance:
        resources = default_resources()
        resources["plant_store"] = store
        for model_type in MODEL_TYPES:
            spec = get_spec(model_type)
            samples = store.training_samples(model_type, min_samples=1, time_range=window)
            features = engineer_features(samples)
            split = time_split(features)
            def fit(s=spec, p=split) -> None:
                s.build_estimator().fit(p.X_train, p.y_train)

            def run(m=model_type) -> None:
                dg.materialize(RETRAIN_ASSETS, partition_key=m, instance=instance, resources=resources,
                               run_config={"ops": {"training_samples": {"config": {"time_range": window}}}})

            time_ratio = _best_of(run, repeats=2) / _best_of(fit)
            memory_ratio = _peak_bytes(run) / _peak_bytes(fit)
            row = f"{model_type:22s} {len(features):6d} {time_ratio:11.2f} {memory_ratio:13.2f}"
            if spec.estimator.startswith("HistGradientBoosting"):
                classic = GradientBoostingClassifier if spec.task == "classification" else GradientBoostingRegressor
                hgb = spec.build_estimator()
                gb = classic(random_state=0, n_estimators=spec.hyperparameters.get("max_iter", 100))
                gb_X = split.X_train.fillna(split.X_train.median())  # classic GB cannot take NaN
                t_hgb = _best_of(lambda e=hgb, p=split: e.fit(p.X_train, p.y_train), repeats=1)
                t_gb = _best_of(lambda e=gb, x=gb_X, p=split: e.fit(x, p.y_train), repeats=1)
                acc_hgb = validate_model(hgb, split.X_holdout, split.y_holdout, spec)["accuracy"]
                acc_gb = validate_model(gb, split.X_holdout.fillna(split.X_train.median()), split.y_holdout,
                                        spec)["accuracy"]
                row += f" {t_gb / t_hgb:11.2f} {acc_hgb:8.3f} {acc_gb:7.3f}"
            print(row)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the whole benchmark process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
