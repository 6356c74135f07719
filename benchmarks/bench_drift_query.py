"""Benchmark: the drift check's SQL over a large prediction log, without and with the covering index.

Run on demand (not in CI):  .venv/bin/python -m benchmarks.bench_drift_query [--rows 1000000 --repeats 5]

It fills a SQLite plant database with `--rows` logged predictions: a year of seven model types, a
new version every 60 days, outcomes known, 80 % right. Then it times `DriftDetector.check_logged` (the SQL aggregation
by day of age behind every drift verdict; feature drift off) with only the (model_type, ts) index,
then with the covering index `ix_predictions_drift` that `datastore.py` now creates. Both are
measured in the same run, on the same file; the report gives medians, min-max and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sklearn.dummy import DummyClassifier

from retraining_pipelines import MODEL_TYPES, DriftDetector, ModelMetadata, ModelRegistry, PlantDataStore
from retraining_pipelines.plantdb import DAY

MODEL = "disease"
COVERING = "ix_predictions_drift"


def _fill(store: PlantDataStore, rows: int, one_version: bool) -> None:
    """A year of the plant app's log: seven model types, a new version every 60 days, 80 % right.

    `one_version`: the worst case instead, every row the checked version's, all in the last 30 days.
    """
    rng = np.random.default_rng(0)
    end = int(datetime.now(UTC).timestamp())
    ts = np.sort(rng.integers(end - (30 if one_version else 365) * DAY, end, rows))
    age_bucket = np.zeros(rows, dtype=int) if one_version else (end - ts) // (60 * DAY)
    truth = rng.choice(["healthy", "fungal", "pest"], rows)
    right = rng.random(rows) < 0.8
    frame = pd.DataFrame({
        "model_type": MODEL if one_version else rng.choice(MODEL_TYPES, rows), "ts": ts,
        "unit_id": rng.integers(1, 9, rows),
        "model_version": np.where(age_bucket == 0, "1.0.0", [f"0.{b}.0" for b in age_bucket]),
        "prediction": np.where(right, truth, "bacterial"), "actual": truth,
    })
    for start in range(0, rows, 200_000):
        with store.engine.begin() as conn:
            frame.iloc[start:start + 200_000].to_sql("predictions", conn, if_exists="append", index=False)


def _timed(detector: DriftDetector, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        detector.check_logged(MODEL, with_features=False)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one-version", action="store_true", help="worst case: every row the checked version's")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = PlantDataStore(database_url=f"sqlite:///{Path(tmp) / 'plant.sqlite'}")
        registry = ModelRegistry(Path(tmp) / "registry")
        model = DummyClassifier(strategy="most_frequent").fit([[0.0]], ["healthy"])
        meta = ModelMetadata(model_type=MODEL, feature_names=["x"], training_samples=1, training_duration=0.0,
                             performance_metrics={"accuracy": 0.85})
        registry.promote(MODEL, registry.register_model(MODEL, model, meta).version, reason="benchmark")
        _fill(store, args.rows, args.one_version)
        detector = DriftDetector(registry, store)
        with store.engine.begin() as conn:
            conn.execute(sa.text(f"DROP INDEX IF EXISTS {COVERING}"))
            conn.execute(sa.text("ANALYZE"))
        before = _timed(detector, args.repeats)
        with store.engine.begin() as conn:
            conn.execute(sa.text(f"CREATE INDEX {COVERING} ON predictions "
                                 "(model_type, model_version, ts, prediction, actual)"))
            conn.execute(sa.text("ANALYZE"))
        after = _timed(detector, args.repeats)
    print(f"| logged predictions | without covering index | with `{COVERING}` | speed-up |")
    print("| --- | --- | --- | --- |")
    kind = "one version, 30 days" if args.one_version else "a year, 7 model types, 6 versions each"
    print(f"| {args.rows:,} ({kind}) | {statistics.median(before):.3f} s ({min(before):.3f}-{max(before):.3f}) | "
          f"{statistics.median(after):.3f} s ({min(after):.3f}-{max(after):.3f}) | "
          f"{statistics.median(before) / statistics.median(after):.1f}x |")


if __name__ == "__main__":
    main()
