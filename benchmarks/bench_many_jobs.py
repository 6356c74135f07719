"""Benchmark: a warm `retrain_model` with 1,000 retraining jobs stored, and what building the definitions costs.

Run on demand (not in CI):  .venv/bin/python -m benchmarks.bench_many_jobs [--jobs 1000 --repeats 5]

Before issue 11's change the service rebuilt the whole code location (a schedule per stored job,
the sensors) on every retrain; now a retrain resolves its job once per service. Measured in one
run: the definitions build with `--jobs` jobs (what every retrain used to pay), a warm in-process
`retrain_model("disease")` (median of `repeats`), and a bare script doing the same work with no
Dagster, as the baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from benchmarks.bare import bare_retrains
from retraining_pipelines import AutomatedRetrainingService
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.generator import GeneratorConfig, generate
from retraining_pipelines.jobstore import JobStore, validate_job

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

    with dg.instance_for_test() as instance:
        service = AutomatedRetrainingService(instance=instance, plant_store=store, job_store=jobs)
        service.retrain_model(MODEL, force=True)  # warm: imports, caches, the first version
        build, retrain, base = [], [], []
        for _ in range(args.repeats):
            build.append(timed(service.definitions))
            retrain.append(timed(lambda: service.retrain_model(MODEL, force=True)))
            base.append(timed(bare))
    b, r, d = (statistics.median(x) for x in (base, retrain, build))
    print(f"\nGenerated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, {args.jobs} stored jobs, "
          f"median of {args.repeats}.\n")
    print("| row | seconds | vs bare |")
    print("| --- | --- | --- |")
    print(f"| bare script (SQL, features, fit, metrics, dump) | {b:.2f} | 1.00 |")
    print(f"| warm `retrain_model`, now (job resolved once per service) | {r:.2f} | {r / b:.2f} (+{r - b:.2f} s) |")
    print(f"| building the definitions ({args.jobs} schedules), paid per retrain before | {d:.2f} | "
          f"before: ~{(r + d) / b:.2f} (+{r + d - b:.2f} s) |")


if __name__ == "__main__":
    main()
