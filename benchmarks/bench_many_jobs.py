"""Benchmark: a warm `retrain_model` with 1,000 retraining jobs stored, and what building the definitions costs.

Run on demand (not in CI):  .venv/bin/python -m benchmarks.bench_many_jobs [--jobs 1000 --repeats 5]

Before issue 11's change the service rebuilt the whole code location (a schedule per stored job,
the sensors) on every retrain; now a retrain resolves its job once per service. Measured in one
run, interleaved: the definitions build with `--jobs` jobs (what every retrain used to pay), a warm
in-process `retrain_model("disease")` (median of `repeats`) on two Dagster instances - Dagster's
default SQLite storage and compute logs, and the embedded default's (`dagster_home/dagster.yaml`:
the event log with pooled connections, instance_storage.py; run output without mirror processes,
compute_logs.py) - and a bare script doing the same work with no Dagster, as the baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import yaml

from benchmarks.bare import bare_retrains
from retraining_pipelines import AutomatedRetrainingService
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.generator import GeneratorConfig, generate
from retraining_pipelines.jobstore import JobStore, validate_job
from retraining_pipelines.settings import PROJECT_DAGSTER_HOME

MODEL = "disease"


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    os.environ["DAGSTER_HOME"] = str(work)
    store = PlantDataStore(database_url=f"sqlite:///{work / 'plant.sqlite'}")
    store.write_frames(generate(GeneratorConfig(end=datetime.now(UTC), days=90, units=6)).tables())
    jobs = JobStore(work / "jobs.sqlite")
    for i in range(args.jobs):
        jobs.add(validate_job(MODEL, "daily", schedule_time=f"{i % 24:02d}:{i % 60:02d}"))

    def bare() -> None:
        bare_retrains(store, work, (MODEL,), "last_90d")

    config = yaml.safe_load((PROJECT_DAGSTER_HOME / "dagster.yaml").read_text())
    embedded = {key: config[key] for key in ("storage", "compute_logs")}
    with contextlib.ExitStack() as stack:
        services = {}
        storages = (("Dagster's default SQLite storage", None), ("the embedded default's instance", embedded))
        for name, overrides in storages:
            instance = stack.enter_context(dg.instance_for_test(overrides=overrides))
            services[name] = AutomatedRetrainingService(instance=instance, plant_store=store, job_store=jobs)
            services[name].retrain_model(MODEL, force=True)  # warm: imports, caches, the first version
        build, base = [], []
        retrain: dict[str, list[float]] = {name: [] for name in services}
        for _ in range(args.repeats):
            build.append(timed(next(iter(services.values())).definitions))
            for name, service in services.items():
                retrain[name].append(timed(lambda service=service: service.retrain_model(MODEL, force=True)))
            base.append(timed(bare))
    b, d = statistics.median(base), statistics.median(build)
    print(f"\nGenerated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, {args.jobs} stored jobs, "
          f"median (min-max) of {args.repeats}, interleaved.\n")
    print("| row | seconds | vs bare |")
    print("| --- | --- | --- |")
    print(f"| bare script (SQL, features, fit, metrics, dump) | {b:.2f} ({min(base):.2f}-{max(base):.2f}) | 1.00 |")
    for name, times in retrain.items():
        r = statistics.median(times)
        print(f"| warm `retrain_model`, {name} | {r:.2f} ({min(times):.2f}-{max(times):.2f}) | "
              f"{r / b:.2f} (+{r - b:.2f} s) |")
    r = statistics.median(retrain["the embedded default's instance"])
    print(f"| building the definitions ({args.jobs} schedules), paid per retrain before | {d:.2f} | "
          f"before: ~{(r + d) / b:.2f} (+{r + d - b:.2f} s) |")


if __name__ == "__main__":
    main()
