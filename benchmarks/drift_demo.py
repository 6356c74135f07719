"""The README drift walkthrough, in process, over many demo worlds: what v1.1.0 recovers.

The demo world ends "now", so every hour seeds another world, and a walkthrough that works in one
may not in the next (the daemon test failed at some hours). Per world (`generator.demo_config`,
sensor_recalibration x 2 starting 14 days before the end, held back) this runs the README's steps
with the service's own code: v1.0.0 trained on the world before the drift (`last_90d`), the drifted
days released, `replay_predictions` over `last_14d`, two drift checks (`evaluate_drift_jobs`, the
seeded on_drift job), the requested retrain through the pipeline and gate. Reported: v1.0.0 before
and on the drift, when the drift was dated and the window learned from, v1.1.0 on its hold-out, and
`hindsight_accuracy` - a retrain told when the drift began, on the same hold-out. Run on demand:

    .venv/bin/python -m benchmarks.drift_demo --start 2026-11-26T00:00:00+00:00 --worlds 48
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from benchmarks import LATE_AUTUMN
from benchmarks.drift_scenarios import publish
from retraining_pipelines import validation
from retraining_pipelines.assets import samples_run_config
from retraining_pipelines.catalog import get_spec
from retraining_pipelines.code_location import build_definitions, default_resources
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.drift import replay_predictions
from retraining_pipelines.drift_policy import AS_OF_TAG, DRIFT_COOLDOWN_ENV, evaluate_drift_jobs
from retraining_pipelines.features import engineer_features
from retraining_pipelines.generator import demo_config, generate
from retraining_pipelines.io_manager import ModelRegistryResource
from retraining_pipelines.jobstore import DEFAULT_JOBS, JobStore
from retraining_pipelines.notifications import Notifier
from retraining_pipelines.plantdb import DAY
from retraining_pipelines.training import change_weights, time_split, validate_model

MODEL = "disease"
DRIFT = "sensor_recalibration"
DRIFT_DAYS_AGO = 14
MAGNITUDE = 2.0


@dataclass
class DemoWorld:
    end: datetime
    pre_drift: float
    drifted: float
    change_days_ago: int | None
    before_log: bool
    window: str
    recovered: float
    hindsight: float
    holdout_rows: int

    @property
    def noise(self) -> float:
        return noise(self.hindsight, self.holdout_rows)


def noise(accuracy: float, rows: int) -> float:
    """Two standard errors of an accuracy measured on `rows` hold-out rows: what a walkthrough's
    figure may fall short of its hindsight by and still be the same."""
    return 2 * math.sqrt(accuracy * (1 - accuracy) / rows)


def hindsight_accuracy(store: PlantDataStore, time_range: str, end: datetime,
                       drift_start: datetime) -> tuple[float, int]:
    """What a retrain told when the drift began scores on the drift retrain's hold-out (same window,
    same split), and the hold-out's rows: the better of learning from the rows since the drift alone,
    or from all of them with the older ones weighted down as ours does."""
    split = time_split(engineer_features(store.training_samples(MODEL, 1, time_range, end=end)))
    spec = get_spec(MODEL)
    start_ts = int(drift_start.timestamp())
    since = split.ts_train >= start_ts
    scores = []
    for rows, weights in ((since, None), (slice(None), change_weights(split.ts_train, start_ts))):
        estimator = spec.build_estimator().fit(split.X_train[rows], split.y_train[rows], sample_weight=weights)
        scores.append(validate_model(estimator, split.X_holdout, split.y_holdout, spec)["accuracy"])
    return max(scores), len(split.y_holdout)


def run_world(end: datetime) -> DemoWorld:
    """The README's steps on the demo world ending at `end`."""
    home = Path(tempfile.mkdtemp(prefix="drift-demo-"))
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ[DRIFT_COOLDOWN_ENV] = "0"
    config = demo_config(drift=DRIFT, drift_days_ago=DRIFT_DAYS_AGO, drift_magnitude=MAGNITUDE, end=end)
    drift_start = config.drift[0].start
    before, after = generate(config).split(int(drift_start.timestamp()))
    store = PlantDataStore(database_url=f"sqlite:///{home / 'plant_data.sqlite'}")
    store.write_frames(before)
    jobs = JobStore(home / "jobs.sqlite")
    jobs.seed_defaults_once(DEFAULT_JOBS)
    notifier = Notifier(log_path=str(home / "notifications.jsonl"))
    resources = default_resources(store, ModelRegistryResource(registry_dir=str(home / "registry")), notifier)
    registry = resources["model_registry"].get()
    job = build_definitions(job_store=jobs, resources=resources).resolve_job_def("retrain_model_job")
    with dg.instance_for_test() as instance:
        spec = get_spec(MODEL)
        job.execute_in_process(partition_key=MODEL, run_config=samples_run_config("last_90d", spec.min_samples, end),
                               instance=instance, tags={AS_OF_TAG: (end - timedelta(hours=1)).isoformat()})
        store.write_frames(after)
        replay_predictions(store, registry, MODEL, "last_14d", end=end)
        evaluation = None
        for _ in range(2):  # the second check confirms
            evaluation = evaluate_drift_jobs(jobs.list("on_drift"), instance, store, registry, notifier,
                                             evaluation.cursor if evaluation else None, now=end)
        verdict = evaluation.measurements[MODEL]
        request = next(r for r in evaluation.run_requests if r.partition_key == MODEL)
        job.execute_in_process(partition_key=MODEL, run_config=request.run_config, instance=instance,
                               tags=dict(request.tags))
    window = evaluation.cursor[MODEL]["time_range"]  # the recent window, where the retrain's hold-out lies
    recovered = registry.get_version(MODEL, "1.1.0").metrics["accuracy"]
    best, rows = hindsight_accuracy(store, window, end, drift_start)
    return DemoWorld(end, verdict.baseline_accuracy, verdict.current_accuracy, verdict.change_days_ago,
                     verdict.change_before_log, window, recovered, best, rows)


def report(worlds: list[DemoWorld], started: datetime, seconds: float) -> str:
    within = [w for w in worlds if w.recovered > w.hindsight - w.noise]
    near = [w for w in worlds if w.recovered > w.pre_drift - 0.10]
    days = sorted(validation.time_range(w.window) // DAY for w in worlds)
    lines = [f"## The README drift walkthrough over {len(worlds)} demo worlds (`python -m benchmarks.drift_demo`)", "",
             f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores in {seconds / 60:.1f} min; "
             f"worlds ending hourly from {started:%Y-%m-%d %H:%M} UTC.", "",
             "| world ends | v1.0.0 pre-drift | v1.0.0 drifted | drop dated (days ago) | before the log | window | "
             "v1.1.0 | hindsight ± 2 SE | hold-out rows |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for w in worlds:
        lines.append(f"| {w.end:%m-%d %H:%M} | {w.pre_drift:.3f} | {w.drifted:.3f} | {w.change_days_ago} | "
                     f"{'yes' if w.before_log else 'no'} | {w.window} | {w.recovered:.3f} | "
                     f"{w.hindsight:.3f} ± {w.noise:.3f} | {w.holdout_rows} |")
    med = statistics.median
    lines += ["", f"- medians: v1.0.0 {med(w.pre_drift for w in worlds):.3f} before the drift, "
              f"{med(w.drifted for w in worlds):.3f} on it; v1.1.0 {med(w.recovered for w in worlds):.3f} "
              f"(range {min(w.recovered for w in worlds):.3f}-{max(w.recovered for w in worlds):.3f}); "
              f"hindsight {med(w.hindsight for w in worlds):.3f}",
              f"- windows learned from: {days[0]}-{days[-1]} days (the drift began {DRIFT_DAYS_AGO} days back)",
              f"- v1.1.0 within 2 SE of hindsight: {len(within)} of {len(worlds)}; within 10 points of "
              f"pre-drift: {len(near)} of {len(worlds)}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=datetime.fromisoformat, default=LATE_AUTUMN)
    parser.add_argument("--worlds", type=int, default=48)
    parser.add_argument("--write", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()
    started = time.perf_counter()
    worlds = []
    for i in range(args.worlds):
        worlds.append(run_world(args.start + timedelta(hours=i)))
        print(f"world {i + 1}/{args.worlds}: {time.perf_counter() - started:.0f} s", flush=True)
    publish(report(worlds, args.start, time.perf_counter() - started), args.write)


if __name__ == "__main__":
    main()
