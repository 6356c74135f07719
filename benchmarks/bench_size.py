"""Benchmark: one retrain in a fresh process against the bare script, from ~1k to ~1M training rows.

Run on demand (not in CI):
    .venv/bin/python -m benchmarks.bench_size --units 6 --days 90 --repeats 3      # ~1k rows per model
    .venv/bin/python -m benchmarks.bench_size --units 100 --days 126 --repeats 2   # ~100k climate rows
    .venv/bin/python -m benchmarks.bench_size --units 100 --days 125 --worlds 10 --repeats 1   # ~1M

It generates one world into a SQLite plant database, then runs, interleaved, `--repeats` times each:
  * bare: a fresh Python doing the project's SQL (`plantdb`), features, time split, estimator,
    metrics and `joblib.dump`, with no Dagster imported (it refuses to run if Dagster got imported);
  * ours: a fresh Python calling `AutomatedRetrainingService().retrain_model(model, force=True)` on a
    real DAGSTER_HOME (event log, registry, gate) configured by the committed `dagster_home/dagster.yaml`,
    as `retraining retrain` does (`--default-storage`: Dagster's default SQLite storage instead).
Each child's wall time and peak RSS come from `os.wait4` (the kernel's figure for that process
alone). The children also report where their time went: the bare script per stage, ours per
Dagster step (from the run's event log) plus what came before the run (imports, service).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

MODEL = "climate_optimizer"


def _child_bare(work: Path, model: str, time_range: str) -> dict[str, float]:
    started = time.perf_counter()
    import joblib

    from retraining_pipelines.catalog import get_spec
    from retraining_pipelines.features import engineer_features
    from retraining_pipelines.plantdb import PlantDatabase
    from retraining_pipelines.training import time_split, validate_model

    if "dagster" in sys.modules:
        raise SystemExit("the bare script imported Dagster: it would not be a baseline")
    stages = {"imports": time.perf_counter() - started}

    def lap(name: str) -> None:
        stages[name] = time.perf_counter() - started - sum(stages.values())

    store = PlantDatabase(f"sqlite:///{work / 'plant.sqlite'}")
    spec = get_spec(model)
    samples = store.training_samples(model, min_samples=1, time_range=time_range)
    lap("sql")
    features = engineer_features(samples)
    split = time_split(features)
    lap("features")
    estimator = spec.build_estimator().fit(split.X_train, split.y_train)
    lap("fit")
    validate_model(estimator, split.X_holdout, split.y_holdout, spec)
    joblib.dump(estimator, work / f"{model}.joblib")
    lap("metrics + dump")
    stages["rows"] = len(features)
    return stages


def _child_ours(work: Path, model: str, time_range: str) -> dict[str, float]:
    started = time.perf_counter()
    os.environ["DAGSTER_HOME"] = str(work / "home")
    os.environ["PLANT_DATABASE_URL"] = f"sqlite:///{work / 'plant.sqlite'}"
    from retraining_pipelines import AutomatedRetrainingService

    stages = {"imports": time.perf_counter() - started}
    service = AutomatedRetrainingService()
    service.retrain_model(model, force=True, time_range=time_range)
    run = service.instance.get_runs(limit=1)[0]
    for event in service.instance.all_logs(run.run_id):
        kind = event.dagster_event.event_type_value if event.dagster_event else None
        if kind == "STEP_START":
            stages[f"step {event.step_key}"] = -event.timestamp
        elif kind == "STEP_SUCCESS":
            stages[f"step {event.step_key}"] += event.timestamp
    stages["total in process"] = time.perf_counter() - started
    return stages


def _measure(kind: str, work: Path, model: str, time_range: str) -> dict[str, float]:
    """One child: its own stages, plus the wall time and peak RSS the kernel accounted to it."""
    out = work / f"{kind}.json"
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_size", "--child", kind, "--work", str(work),
                              "--model", model, "--time-range", time_range])
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{kind} child failed with status {status}")
    stages = json.loads(out.read_text())
    return {**stages, "wall": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def _fill(work: Path, units: int, days: int, worlds: int) -> None:
    """`worlds` generated worlds side by side (seeds 0.., unit and plant ids offset): one grower's data x N.

    The generator makes at most 100 units; a million training rows needs ~1,000 units over ~4 months.
    """
    from retraining_pipelines.generator import GeneratorConfig, generate
    from retraining_pipelines.plantdb import PlantDatabase

    store, end = PlantDatabase(f"sqlite:///{work / 'plant.sqlite'}"), datetime.now(UTC)
    for world in range(worlds):
        tables = generate(GeneratorConfig(end=end, days=days, units=units, seed=world)).tables()
        for name, frame in tables.items():
            if "unit_id" in frame:
                frame["unit_id"] += world * units
            if "plant_id" in frame:
                frame["plant_id"] += world * 100_000
            for start in range(0, len(frame), 1_000_000):  # bounded memory while writing
                store.write_frames({name: frame.iloc[start:start + 1_000_000]})


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=6)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--worlds", type=int, default=1, help="generated worlds side by side (more rows)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--time-range", default=None, help="default: last_<days>d")
    parser.add_argument("--work", type=Path, default=None, help="reuse a generated world (keeps the plant DB)")
    parser.add_argument("--child", choices=("bare", "ours"), default=None)
    parser.add_argument("--default-storage", action="store_true",
                        help="ours on Dagster's default SQLite storage, not the committed dagster.yaml's")
    parser.add_argument("--fill", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    time_range = args.time_range or f"last_{args.days}d"
    if args.fill:
        _fill(args.work, args.units, args.days, args.worlds)
        return
    if args.child:
        stages = (_child_bare if args.child == "bare" else _child_ours)(args.work, args.model, time_range)
        (args.work / f"{args.child}.json").write_text(json.dumps(stages))
        if args.child == "ours":  # ends as the `retraining` console script does
            from retraining_pipelines.cli import exit_process

            exit_process(0)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-size-"))
    if not (work / "plant.sqlite").exists():
        # in a child of its own: a child's peak RSS starts from what this process held when it forked it
        # (generating 100k rows here made every child read 1,079 MB)
        subprocess.run([sys.executable, "-m", "benchmarks.bench_size", "--fill", "--work", str(work), "--units",
                        str(args.units), "--days", str(args.days), "--worlds", str(args.worlds)], check=True)
    from retraining_pipelines.settings import PROJECT_DAGSTER_HOME

    shutil.rmtree(work / "home", ignore_errors=True)  # ours starts from an empty instance and registry
    (work / "home").mkdir()
    if not args.default_storage:
        shutil.copy(PROJECT_DAGSTER_HOME / "dagster.yaml", work / "home" / "dagster.yaml")
    runs: dict[str, list[dict[str, float]]] = {"bare": [], "ours": []}
    _measure("ours", work, args.model, time_range)  # first version (no champion yet), page cache warm
    for _ in range(args.repeats):
        for kind in ("bare", "ours"):
            runs[kind].append(_measure(kind, work, args.model, time_range))
    bare, ours = runs["bare"], runs["ours"]
    wall = [o["wall"] / b["wall"] for o, b in zip(ours, bare, strict=True)]
    rss = [o["peak_rss_mb"] / b["peak_rss_mb"] for o, b in zip(ours, bare, strict=True)]
    print(f"\n{args.model}, {int(bare[0]['rows']):,} rows ({args.units * args.worlds} units x {args.days} days), "
          f"fresh process each, {'Dagster default' if args.default_storage else 'dagster.yaml'} storage, "
          f"{args.repeats} interleaved pairs, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores\n")
    print("| row | bare | ours | ours / bare |")
    print("| --- | --- | --- | --- |")
    print(f"| wall (s) | {_summary([b['wall'] for b in bare])} | {_summary([o['wall'] for o in ours])} | "
          f"{_summary(wall)} |")
    print(f"| peak RSS (MB) | {_summary([b['peak_rss_mb'] for b in bare])} | "
          f"{_summary([o['peak_rss_mb'] for o in ours])} | {_summary(rss)} |")
    print("\nWhere the time goes (medians, s):")
    for kind, rows in runs.items():
        names = [k for k in rows[0] if k not in ("wall", "peak_rss_mb", "rows")]
        print(f"- {kind}: " + ", ".join(f"{k} {statistics.median(r[k] for r in rows):.2f}" for k in names))


if __name__ == "__main__":
    main()
