"""Benchmark: PostgreSQL + Celery on 1 vs 2 workers, and the registry index at 10,000 versions.

Run on demand (not in CI), with PostgreSQL and Redis running (the same URLs as test_scale_out.py):
    .venv/bin/python -m benchmarks.bench_scale_out [--rounds 2 --days 120 --units 12 --versions 10000]

Throughput: `retraining serve` on a fresh PostgreSQL database, then for 1 and 2 Celery workers
(`retraining worker`, one retrain at a time each), 7 model types x `rounds` retrains queued at once
through the webserver, as the UI's backfill does. Baseline, measured in the same run: a bare script
doing the same work in one process, in sequence, with no Dagster (the project's own SQL, features,
split, estimator, metrics and `joblib.dump`). Reported: wall time from the first launch to the last
run's end, the ratio to the bare script, and the speed-up of 2 workers over 1.

Registry: 10,000 versions (spread over the 7 model types) registered through `ModelRegistry` into a
PostgreSQL index and into a SQLite index; the cost of each operation with an empty index and at 10,000.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from benchmarks.bare import bare_retrains
from retraining_pipelines.catalog import MODEL_TYPES
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.generator import GeneratorConfig, generate
from retraining_pipelines.registry import ModelRegistry
from retraining_pipelines.settings import (
    CELERY_BACKEND_ENV,
    CELERY_BROKER_ENV,
    DATABASE_URL_ENV,
    RUNS_PER_MACHINE_ENV,
    SCALED_OUT_DAGSTER_HOME,
)
from retraining_pipelines_tests import live
from retraining_pipelines_tests.registry_workers import metadata, small_model
from retraining_pipelines_tests.test_scale_out import POSTGRES_ADMIN_URL, REDIS_URL

WINDOW = "last_90d"


def create_database(admin: sa.Engine) -> str:
    name = f"retraining_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    return sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def throughput(env: dict[str, str], home: Path, workers: int, rounds: int, thread_rule: bool = True
               ) -> dict[str, float]:
    """Queue 7 x rounds retrains at once with `workers` Celery workers; when did the last one end?

    The workers share this machine, so they are told how many runs share its cores (the thread
    rule); `thread_rule=False` tells each it is alone, which is what every run did before the rule.
    """
    share = {RUNS_PER_MACHINE_ENV: str(workers if thread_rule else 1)}
    procs = [subprocess.Popen([str(live.BIN / "retraining"), "worker", "--name", f"bench{i}-{uuid.uuid4().hex[:4]}@b"],
                              cwd=live.ROOT, env={**os.environ, **env, **share}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True) for i in range(workers)]
    from retraining_pipelines import workers as celery_side

    deadline = time.monotonic() + 120
    while len(celery_side.app.control.ping(timeout=1.0) or []) < workers and time.monotonic() < deadline:
        time.sleep(0.5)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        with live.serving(home, env=env) as url:
            started = time.time()
            run_ids = [live.launch_retrain(url, model_type) for _ in range(rounds) for model_type in MODEL_TYPES]
            statuses = [live.wait_for_run(url, run_id, timeout=1800) for run_id in run_ids]
            records = instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
    finally:
        for proc in procs:
            os.killpg(proc.pid, 9)
            proc.wait()
    ends = [r.end_time for r in records]
    durations = [r.end_time - r.start_time for r in records]
    return {"wall": max(ends) - started, "run_median": statistics.median(durations),
            "failed": sum(status != "SUCCESS" for status in statuses)}


def registry_costs(index_url: str | None, versions: int) -> dict[str, tuple[float, float]]:
    """Milliseconds per operation with an empty index and with `versions` versions in it."""
    root = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    registry = ModelRegistry(root, index_url=index_url)
    model = small_model(0)

    def ops() -> dict[str, float]:
        timings = {}
        started = time.perf_counter()
        record = registry.register_model("disease", model, metadata(run_id=f"run-{uuid.uuid4().hex}"))
        timings["register"] = time.perf_counter() - started
        started = time.perf_counter()
        registry.promote("disease", record.version, reason="bench")
        timings["promote (gate's swap)"] = time.perf_counter() - started
        for name, fn in (("active version", lambda: registry.get_active_version("disease")),
                         ("version of a run", lambda: registry.version_of_run("disease", record.run_id)),
                         ("list one model's versions", lambda: registry.list_versions("disease")),
                         ("load active model (verified)", lambda: registry.load_model("disease"))):
            started = time.perf_counter()
            fn()
            timings[name] = time.perf_counter() - started
        return timings

    def median_ops() -> dict[str, float]:
        repeats = [ops() for _ in range(5)]
        return {name: statistics.median(r[name] for r in repeats) for name in repeats[0]}

    empty = median_ops()
    per_type = versions // len(MODEL_TYPES)
    for model_type in MODEL_TYPES:
        for _ in range(per_type):
            registry.register_model(model_type, model, metadata(model_type))
    full = median_ops()
    shutil.rmtree(root, ignore_errors=True)
    return {name: (empty[name] * 1000, full[name] * 1000) for name in empty}


def report_throughput(store: PlantDataStore, work: Path, env: dict[str, str], home: Path,
                      args: argparse.Namespace) -> None:
    bare = [bare_retrains(store, work, MODEL_TYPES, WINDOW) for _ in range(args.rounds)]
    one = throughput(env, home, 1, args.rounds)
    # interleaved: load drifts over minutes
    bare += [bare_retrains(store, work, MODEL_TYPES, WINDOW) for _ in range(args.rounds)]
    two = throughput(env, home, 2, args.rounds)
    bare += [bare_retrains(store, work, MODEL_TYPES, WINDOW) for _ in range(args.rounds)]
    oversubscribed = throughput(env, home, 2, args.rounds, thread_rule=False)
    bare_total = statistics.median(bare) * args.rounds
    print(f"{args.days} days x {args.units} units, {len(MODEL_TYPES)} model types x {args.rounds} retrains\n")
    print("| workers | wall, first launch to last end | vs bare script in sequence | median run | speed-up |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| bare script, 1 process | {bare_total:.1f} s | 1.00 | {min(bare) / len(MODEL_TYPES):.2f} s "
          f"(per model; a round of 7: {min(bare):.1f}-{max(bare):.1f} s) | |")
    for count, figure in ((1, one), (2, two), ("2, without the thread rule", oversubscribed)):
        print(f"| {count} | {figure['wall']:.1f} s | {figure['wall'] / bare_total:.2f} | "
              f"{figure['run_median']:.2f} s | {one['wall'] / figure['wall']:.2f}x |"
              + (f" ({figure['failed']:.0f} failed)" if figure["failed"] else ""))


def report_registry(url: str, versions: int) -> None:
    print(f"\nRegistry index, ms per operation (median of 5), empty -> {versions:,} versions:\n")
    pg = registry_costs(url, versions)
    lite = registry_costs(None, versions)
    print(f"| operation | PostgreSQL, empty | PostgreSQL, {versions:,} | SQLite, empty | SQLite, {versions:,} |")
    print("| --- | --- | --- | --- | --- |")
    for name in pg:
        print(f"| {name} | {pg[name][0]:.1f} | {pg[name][1]:.1f} | {lite[name][0]:.1f} | {lite[name][1]:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--units", type=int, default=12)
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--part", choices=("all", "throughput", "registry"), default="all")
    args = parser.parse_args()
    began = time.time()
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    url = create_database(admin)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(SCALED_OUT_DAGSTER_HOME / "dagster.yaml", home / "dagster.yaml")
    env = {"DAGSTER_HOME": str(home), DATABASE_URL_ENV: url, "MODEL_REGISTRY_DIR": str(work / "model_registry"),
           CELERY_BROKER_ENV: f"{REDIS_URL}/14", CELERY_BACKEND_ENV: f"{REDIS_URL}/15"}
    os.environ.update(env)
    import redis

    for db in (14, 15):
        redis.Redis.from_url(f"{REDIS_URL}/{db}").flushdb()
    store = PlantDataStore(database_url=url)
    data = generate(GeneratorConfig(end=datetime.now(UTC), days=args.days, units=args.units))
    store.write_frames(data.tables())
    try:
        print(f"\nGenerated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, Python "
              f"{platform.python_version()}, Dagster {dg.__version__}, PostgreSQL + Redis on 127.0.0.1.\n")
        if args.part in ("all", "throughput"):
            report_throughput(store, work, env, home, args)
        if args.part in ("all", "registry"):
            report_registry(url, args.versions)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{sa.make_url(url).database}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n({(time.time() - began) / 60:.1f} min)")


if __name__ == "__main__":
    main()
