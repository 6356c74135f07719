"""Benchmark: retrains through the embedded service's daemon vs a bare script, default vs warm run launcher.

Run on demand (not in CI):
    .venv/bin/python -m benchmarks.bench_daemon [--days 180 --units 12 --repeats 3 --before default-storage]
    (--before: default-storage, default-launcher or mirrored-logs)

`retraining serve` (the embedded default: SQLite, the daemon's queue, 2 runs at once, dequeue every
1 s, the thread rule) on the demo data, measured twice in one run, interleaved with the bare script:
  * after: the committed `dagster_home/dagster.yaml`;
  * before, `--before default-storage`: the same with Dagster's own `storage: sqlite:` instead of the
    pooled event log (instance_storage.py); `--before default-launcher`: the same with Dagster's
    `DefaultRunLauncher` (a fresh Python per run, importing everything again) instead of the
    `WarmRunLauncher` (launcher.py), which forks each run from a process with the libraries imported;
    `--before mirrored-logs`: the same with Dagster's `LocalComputeLogManager` (run output mirrored to the
    terminal live by four processes per run) instead of `EchoingComputeLogManager` (compute_logs.py).
Rows: one retrain launched as the UI's Materialize button does, launch -> SUCCESS (median of
`repeats`; the first launch of a service also starts the warm process), and all 7 model types
launched at once (a backfill), first launch -> last SUCCESS. Baseline: a bare script doing the same
work in one process, no Dagster (the project's SQL, features, split, estimator, metrics,
`joblib.dump`). Also the peak memory each `WarmRunLauncher` run's process reports in its log.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import yaml

from benchmarks.bare import bare_retrains
from retraining_pipelines.catalog import MODEL_TYPES
from retraining_pipelines.generator import GeneratorConfig, generate
from retraining_pipelines.plantdb import PlantDatabase
from retraining_pipelines.settings import PROJECT_DAGSTER_HOME
from retraining_pipelines_tests import live

WINDOW = "last_90d"


def home_for(work: Path, name: str, plant_db: Path, tuned: bool, before: str) -> Path:
    """A DAGSTER_HOME with the committed instance config, or with one part of it Dagster's default (`before`)."""
    home = work / name
    home.mkdir()
    config = yaml.safe_load((PROJECT_DAGSTER_HOME / "dagster.yaml").read_text())
    if not tuned and before == "default-launcher":
        config.pop("run_launcher")
    elif not tuned and before == "mirrored-logs":
        config.pop("compute_logs")
    elif not tuned:
        config["storage"] = {"sqlite": {"base_dir": {"env": "DAGSTER_HOME"}}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(plant_db, home / "plant_data.sqlite")
    return home


def peak_memory(instance: dg.DagsterInstance, run_id: str) -> float | None:
    """The peak resident memory (MB) a run's process reported in its log (`WarmRunLauncher` runs)."""
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is not None and event.is_engine_event and "peak_rss_mb" in event.engine_event_data.metadata:
            return float(event.engine_event_data.metadata["peak_rss_mb"].value)
    return None


def through_daemon(home: Path, repeats: int) -> tuple[list[float], float, list[float]]:
    os.environ["DAGSTER_HOME"] = str(home)  # the embedded dagster.yaml reads DAGSTER_HOME
    instance = dg.DagsterInstance.from_config(str(home))
    with live.serving(home) as url:
        singles = []
        for _ in range(repeats):
            started = time.time()
            run_id = live.launch_retrain(url, "disease")
            assert live.wait_for_run(url, run_id) == "SUCCESS"
            singles.append(instance.get_run_record_by_id(run_id).end_time - started)
        started = time.time()
        run_ids = [live.launch_retrain(url, model_type) for model_type in MODEL_TYPES]
        assert all(live.wait_for_run(url, run_id, timeout=900) == "SUCCESS" for run_id in run_ids)
        ends = [r.end_time for r in instance.get_run_records(dg.RunsFilter(run_ids=run_ids))]
        peaks = [p for run_id in run_ids if (p := peak_memory(instance, run_id)) is not None]
        return singles, max(ends) - started, peaks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--units", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", choices=("default-storage", "default-launcher", "mirrored-logs"),
                        default="default-storage")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    plant_db = work / "plant_data.sqlite"
    store = PlantDatabase(f"sqlite:///{plant_db}")
    store.write_frames(generate(GeneratorConfig(end=datetime.now(UTC), days=args.days, units=args.units)).tables())
    bare_one, bare_seven, figures, peaks = [], [], {}, []
    for round_, tuned in enumerate((False, True, False, True)):
        bare_one += [bare_retrains(store, work, ("disease",), WINDOW) for _ in range(args.repeats)]
        bare_seven.append(bare_retrains(store, work, MODEL_TYPES, WINDOW))
        home = home_for(work, f"home{round_}", plant_db, tuned, args.before)
        singles, seven, run_peaks = through_daemon(home, args.repeats)
        peaks += run_peaks
        figures.setdefault(tuned, ([], []))
        figures[tuned][0].extend(singles)
        figures[tuned][1].append(seven)
    one, seven = statistics.median(bare_one), statistics.median(bare_seven)
    print(f"\nGenerated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, Dagster {dg.__version__}; demo data {args.days} days x {args.units} units; "
          f"before: {args.before}.\n")
    print("| row | bare script | before | after | before / bare | after / bare |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, base, index in (("one retrain (disease), launch -> SUCCESS", one, 0),
                               ("all 7 launched at once, first launch -> last SUCCESS", seven, 1)):
        before, after = (statistics.median(figures[t][index]) for t in (False, True))
        spread = {t: f"{min(figures[t][index]):.1f}-{max(figures[t][index]):.1f}" for t in (False, True)}
        print(f"| {label} | {base:.2f} s | {before:.1f} s ({spread[False]}) | {after:.1f} s ({spread[True]}) | "
              f"{before / base:.1f}x (+{before - base:.1f} s) | {after / base:.1f}x (+{after - base:.1f} s) |")
    if peaks:
        print(f"\nPeak memory of a run process (after; its own log, libraries shared with the warm process "
              f"included): median {statistics.median(peaks):.0f} MB ({min(peaks):.0f}-{max(peaks):.0f}) over "
              f"{len(peaks)} runs of the 7 model types.")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
