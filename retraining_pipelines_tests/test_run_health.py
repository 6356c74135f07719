"""No stuck runs, no stranded candidates: real processes killed with SIGKILL, then the next tick."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from retraining_pipelines.assets import RETRAIN_ASSETS
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.drift_policy import DRIFT_COOLDOWN_ENV
from retraining_pipelines.errors import RegistryError
from retraining_pipelines.io_manager import ModelRegistryResource
from retraining_pipelines.jobstore import JobStore, validate_job
from retraining_pipelines.registry import ModelRegistry, ModelStatus
from retraining_pipelines.runs import PID_TAG, RETRAIN_JOB, process_alive, sweep

from . import retrain_worker
from .helpers import drift_sensor_tick, pipeline_resources, retrain

MODEL = "disease"
ROOT = Path(__file__).resolve().parent.parent


def _start_worker(home: Path, db_url: str) -> subprocess.Popen:
    return retrain_worker.start(home, db_url, MODEL)


def _wait_for_started_run(instance: dg.DagsterInstance, worker: subprocess.Popen,
                          timeout: float = 120) -> dg.DagsterRun:
    """The worker's run once its first step has said which process runs it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        tagged = [r for r in runs if r.tags.get(PID_TAG) == str(worker.pid)]
        if tagged:
            return tagged[0]
        assert worker.poll() is None, worker.communicate()
        time.sleep(0.05)
    raise TimeoutError("the worker's run never started")


def test_a_sigkilled_retrain_is_marked_failed_and_no_longer_blocks_drift(
    isolated_dagster_home: Path, plant_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DRIFT_COOLDOWN_ENV, "0")
    instance = dg.DagsterInstance.from_config(str(isolated_dagster_home))
    worker = _start_worker(isolated_dagster_home, plant_db_url)
    run = _wait_for_started_run(instance, worker)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED, "Dagster alone never notices"

    store = PlantDataStore(database_url=plant_db_url)
    jobs = JobStore(isolated_dagster_home / "jobs.sqlite")
    jobs.add(validate_job(MODEL, "on_drift", drift_threshold=0.15, min_samples=50))
    resources = pipeline_resources(store)
    tick = drift_sensor_tick(jobs, resources, instance)
    message = tick.skip_reason.skip_message
    assert "already queued or running" not in message, message
    assert "no active version" in message, "the tick judged the model instead of waiting on a dead run"
    failed = instance.get_run_by_id(run.run_id)
    assert failed.status == dg.DagsterRunStatus.FAILURE
    reason = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[-1].message
    assert f"pid {worker.pid}" in reason and "is gone" in reason

    # the next retrain of that model proceeds and is served
    after = _start_worker(isolated_dagster_home, plant_db_url)
    _, err = after.communicate(timeout=300)
    assert after.returncode == 0, err[-2000:]
    assert ModelRegistryResource().get().get_active_version(MODEL) == "1.0.0"
    instance.dispose()


def test_a_live_run_is_never_reaped(isolated_dagster_home: Path, plant_db_url: str) -> None:
    instance = dg.DagsterInstance.from_config(str(isolated_dagster_home))
    worker = _start_worker(isolated_dagster_home, plant_db_url)
    try:
        run = _wait_for_started_run(instance, worker)
        report = sweep(instance, ModelRegistryResource().get())
        assert run.run_id not in report.reaped_runs
        assert instance.get_run_by_id(run.run_id).status in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.SUCCESS)
    finally:
        worker.communicate(timeout=300)
    assert worker.returncode == 0
    instance.dispose()


def test_a_reused_pid_does_not_look_alive() -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert process_alive(sleeper.pid)
        assert not process_alive(sleeper.pid, started="1"), "same pid, other start time: another process"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not process_alive(sleeper.pid)


def test_a_candidate_whose_run_ended_without_a_gate_is_abandoned_never_served(
    plant_store: PlantDataStore, instance: dg.DagsterInstance, isolated_dagster_home: Path
) -> None:
    assert retrain(MODEL, plant_store, instance).success  # v1.0.0 active
    partial = dg.materialize(RETRAIN_ASSETS, selection=["training_samples", "engineered_features", "trained_model"],
                             partition_key=MODEL, instance=instance, resources=pipeline_resources(plant_store))
    assert partial.success
    registry: ModelRegistry = ModelRegistryResource().get()
    assert registry.get_version(MODEL, "1.1.0").status == ModelStatus.CANDIDATE
    report = sweep(instance, registry)
    assert [(m, v) for m, v, _ in report.abandoned] == [(MODEL, "1.1.0")]
    record = registry.get_version(MODEL, "1.1.0")
    assert record.status == ModelStatus.ABANDONED
    assert "ended SUCCESS before the promotion gate decided" in registry.audit_trail(MODEL)[-1].reason
    for attempt in (lambda: registry.rollback(MODEL, to_version="1.1.0"),
                    lambda: registry.set_model_status(MODEL, "1.1.0", ModelStatus.ACTIVE),
                    lambda: registry.promote(MODEL, "1.1.0", reason="by hand")):
        with pytest.raises(RegistryError):
            attempt()
    assert registry.get_active_version(MODEL) == "1.0.0"
    assert sweep(instance, registry).abandoned == [], "a second sweep changes nothing"


def test_rejected_and_never_gated_versions_are_never_restored(tmp_path: Path) -> None:
    from .registry_workers import metadata, small_model

    registry = ModelRegistry(tmp_path / "registry")
    v1, v2, v3 = (registry.register_model(MODEL, small_model(i), metadata(MODEL)).version for i in range(3))
    registry.promote(MODEL, v1, reason="first")
    registry.reject(MODEL, v2, reason="worse")
    trail = len(registry.audit_trail())
    for target in (v2, v3):
        with pytest.raises(RegistryError, match="never promoted"):
            registry.rollback(MODEL, to_version=target)
        with pytest.raises(RegistryError, match="never promoted"):
            registry.set_model_status(MODEL, target, ModelStatus.ACTIVE)
    with pytest.raises(RegistryError, match="never promoted"):
        registry.set_model_status(MODEL, v3, ModelStatus.ARCHIVED)
    assert registry.get_active_version(MODEL) == v1 and len(registry.audit_trail()) == trail
    registry.promote(MODEL, v3, reason="gate passed")
    assert registry.rollback(MODEL) == (v3, v1), "a version served before is a rollback target"
    assert registry.set_model_status(MODEL, v3, ModelStatus.ACTIVE) is None


def test_the_warm_launcher_tells_run_monitoring_whether_a_run_process_lives(
    isolated_dagster_home: Path, plant_store: PlantDataStore
) -> None:
    """Dagster's run monitoring asks the launcher; the answer comes from the run's pid tags (a real process)."""
    from dagster._core.launcher import WorkerStatus

    from retraining_pipelines.launcher import WarmRunLauncher
    from retraining_pipelines.runs import worker_tags

    instance = dg.DagsterInstance.from_config(str(isolated_dagster_home))
    launcher = WarmRunLauncher()
    launcher.register_instance(instance)
    run_id = retrain(MODEL, plant_store, instance).run_id
    bare = instance.get_run_by_id(run_id)  # tagged by its first step with this (pytest's) process
    assert launcher.check_run_worker_health(bare).status == WorkerStatus.RUNNING
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        instance.add_run_tags(run_id, worker_tags(sleeper.pid))
        assert launcher.check_run_worker_health(instance.get_run_by_id(run_id)).status == WorkerStatus.RUNNING
        reused = {**worker_tags(sleeper.pid), "retraining/process_start": "1"}  # same pid, another process
        instance.add_run_tags(run_id, reused)
        assert launcher.check_run_worker_health(instance.get_run_by_id(run_id)).status == WorkerStatus.FAILED
        instance.add_run_tags(run_id, worker_tags(sleeper.pid))
    finally:
        sleeper.kill()
        sleeper.wait()
    gone = launcher.check_run_worker_health(instance.get_run_by_id(run_id))
    assert gone.status == WorkerStatus.FAILED and str(sleeper.pid) in gone.msg
    assert not launcher.terminate(run_id), "a finished run is not terminated"


def test_terminate_repeats_its_signal_until_the_run_process_stops(isolated_dagster_home: Path) -> None:
    """Python discards an interrupt raised while a process runs a finalizer ("Exception ignored in"): a
    run once finished SUCCESS, and promoted, after the UI's Terminate. A real process that loses the
    first SIGTERM must still be stopped by the ones `terminate` repeats."""
    from retraining_pipelines.launcher import TERMINATE_REPEAT_S, WarmRunLauncher
    from retraining_pipelines.runs import worker_tags

    loses_first = ("import signal, sys, time\n"
                   "lost = []\n"
                   "def on_term(*_):\n"
                   "    if lost: sys.exit(0)\n"
                   "    lost.append(1); print('lost', flush=True)\n"
                   "signal.signal(signal.SIGTERM, on_term)\n"
                   "print('ready', flush=True)\n"
                   "while True: time.sleep(0.05)\n")
    process = subprocess.Popen([sys.executable, "-c", loses_first], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "ready\n"
        instance = dg.DagsterInstance.from_config(str(isolated_dagster_home))
        launcher = WarmRunLauncher()
        launcher.register_instance(instance)
        run = instance.add_run(dg.DagsterRun(job_name=RETRAIN_JOB, status=dg.DagsterRunStatus.STARTED,
                                             tags=worker_tags(process.pid)))
        assert launcher.terminate(run.run_id)
        assert process.stdout.readline() == "lost\n"
        assert process.wait(timeout=10 * TERMINATE_REPEAT_S) == 0  # stopped by a repeated SIGTERM
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELING
    finally:
        process.kill()
        process.wait()


def test_the_warm_process_preloads_libraries_only_never_the_project() -> None:
    """What the forkserver imports, every run inherits; a project module among it would serve stale code
    after an edit or a reload. Checked in a fresh Python: the preload list pulls in none of the project,
    and it does bring the instance's storage (what runs paid 0.6 s for before their first step)."""
    from retraining_pipelines.launcher import DEFAULT_PRELOAD

    probe = ("import importlib, sys\n"
             f"for name in {list(DEFAULT_PRELOAD)!r}: importlib.import_module(name)\n"
             "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('retraining')}))\n"
             "print('dagster._core.storage.event_log.sqlite.sqlite_event_log' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    project, storage = done.stdout.split("\n")[:2]
    assert project == "[]", project
    assert storage == "True"
