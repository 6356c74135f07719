"""Benchmark: the drift check over a large prediction log, from the daily tally and from the log.

Run on demand (not in CI):  .venv/bin/python -m benchmarks.bench_drift_query [--rows 1000000 --repeats 5]

It fills a SQLite plant database with `--rows` logged predictions: a year of seven model types, a
new version every 60 days, outcomes known, 80 % right (`--one-version`: the worst case, every row
the checked version's and inside the window). Then, on the same file in the same run, it times:

* the 60 days of evidence a drift check reads (`logged_hits_by_age`): whole days from the
  `prediction_days` tally the database's triggers keep, the day in progress from the log;
* the log scan it replaced: the same 60 days summed from `predictions` over the covering index
  `ix_predictions_drift` (the baseline);
* the whole `DriftDetector.check_logged` as the sensor runs it (feature shift off; adds the
  registry lookups of the active version and its baseline);
* what the triggers cost the plant app's writes: inserting `--write-rows` labelled predictions into
  an empty log with and without them, interleaved.

Medians and min-max of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sklearn.dummy import DummyClassifier

from retraining_pipelines import MODEL_TYPES, DriftDetector, ModelMetadata, ModelRegistry, PlantDataStore
from retraining_pipelines.drift import CHANGE_SEARCH
from retraining_pipelines.plantdb import DAY, Window, predictions

MODEL = "disease"


def _log(rows: int, one_version: bool, end: int, seed: int = 0) -> pd.DataFrame:
    """A year of the plant app's log: seven model types, a new version every 60 days, 80 % right.

    `one_version`: the worst case instead, every row the checked version's, all in the last 30 days.
    """
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(end - (30 if one_version else 365) * DAY, end, rows))
    age_bucket = np.zeros(rows, dtype=int) if one_version else (end - ts) // (60 * DAY)
    truth = rng.choice(["healthy", "fungal", "pest"], rows)
    right = rng.random(rows) < 0.8
    return pd.DataFrame({
        "model_type": MODEL if one_version else rng.choice(MODEL_TYPES, rows), "ts": ts,
        "unit_id": rng.integers(1, 9, rows),
        "model_version": np.where(age_bucket == 0, "1.0.0", [f"0.{b}.0" for b in age_bucket]),
        "prediction": np.where(right, truth, "bacterial"), "actual": truth,
    })


def _append(engine: sa.Engine, frame: pd.DataFrame) -> None:
    for start in range(0, len(frame), 200_000):
        with engine.begin() as conn:
            frame.iloc[start:start + 200_000].to_sql("predictions", conn, if_exists="append", index=False)


def _log_scan(engine: sa.Engine, window: Window) -> dict[int, tuple[int, int]]:
    """The baseline: the evidence by day of age summed from the log itself (the pre-tally query)."""
    p = predictions.c
    age = ((window.end_ts - 1 - p.ts) // DAY).label("age")
    hit = sa.case((p.prediction == p.actual, 1), else_=0)  # a classifier's rule, as the query had it
    query = (sa.select(age, sa.func.sum(hit), sa.func.count())
             .where(p.model_type == MODEL, p.model_version == "1.0.0", p.actual.is_not(None),
                    p.ts >= window.start_ts, p.ts < window.end_ts)
             .group_by(age))
    with engine.connect() as conn:
        return {int(a): (int(h), int(n)) for a, h, n in conn.execute(query)}


def _timed(action: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return times


def _write_cost(tmp: Path, rows: int, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds to insert `rows` labelled predictions into an empty log, with and without the triggers."""
    frame = _log(rows, one_version=False, end=int(datetime.now(UTC).timestamp()), seed=1)
    with_triggers, without = [], []
    for i in range(repeats):
        for kind, times in (("with", with_triggers), ("without", without)):
            engine = PlantDataStore(database_url=f"sqlite:///{tmp / f'write-{kind}-{i}.sqlite'}").engine
            if kind == "without":
                with engine.begin() as conn:
                    for (name,) in conn.exec_driver_sql(
                            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'predictions'"):
                        conn.exec_driver_sql(f"DROP TRIGGER {name}")
            times += _timed(lambda e=engine: _append(e, frame), 1)
    return with_triggers, without


def _cell(times: list[float]) -> str:
    return f"{statistics.median(times):.3f} s ({min(times):.3f}-{max(times):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write-rows", type=int, default=200_000)
    parser.add_argument("--one-version", action="store_true", help="worst case: every row the checked version's")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = PlantDataStore(database_url=f"sqlite:///{Path(tmp) / 'plant.sqlite'}")
        registry = ModelRegistry(Path(tmp) / "registry")
        model = DummyClassifier(strategy="most_frequent").fit([[0.0]], ["healthy"])
        meta = ModelMetadata(model_type=MODEL, feature_names=["x"], training_samples=1, training_duration=0.0,
                             performance_metrics={"accuracy": 0.85})
        registry.promote(MODEL, registry.register_model(MODEL, model, meta).version, reason="benchmark")
        end = int(datetime.now(UTC).timestamp())
        started = time.perf_counter()
        _append(store.engine, _log(args.rows, args.one_version, end))
        fill = time.perf_counter() - started
        with store.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
        detector = DriftDetector(registry, store)
        window = Window.last(CHANGE_SEARCH, datetime.fromtimestamp(end, UTC))
        checked = _timed(lambda: detector.check_logged(MODEL, with_features=False), args.repeats)
        tallied = _timed(lambda: store.logged_hits_by_age(MODEL, "1.0.0", window), args.repeats)
        scanned = _timed(lambda: _log_scan(store.engine, window), args.repeats)
        writes_with, writes_without = _write_cost(Path(tmp), args.write_rows, args.repeats)
    kind = "one version, 30 days" if args.one_version else "a year, 7 model types, 6 versions each"
    print(f"Filled {args.rows:,} rows ({kind}) in {fill:.0f} s, triggers on.\n")
    print("| logged predictions | 60 days' evidence: log scan (before) | from the tally | speed-up | "
          "whole `check_logged` |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {args.rows:,} ({kind}) | {_cell(scanned)} | {_cell(tallied)} | "
          f"{statistics.median(scanned) / statistics.median(tallied):.0f}x | {_cell(checked)} |")
    print(f"\n| inserting {args.write_rows:,} labelled predictions | without triggers | with triggers | cost |")
    print("| --- | --- | --- | --- |")
    print(f"| SQLite, 200k-row transactions | {_cell(writes_without)} | {_cell(writes_with)} | "
          f"{statistics.median(writes_with) / statistics.median(writes_without):.2f}x |")


if __name__ == "__main__":
    main()
