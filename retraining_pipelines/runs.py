"""Run health: no run stays STARTED after its process died, no candidate outlives its run.

Dagster's run monitoring (enabled in `dagster_home/dagster.yaml`) fails runs that never start and
runs past `max_runtime_seconds`, but the default run launcher cannot tell whether a STARTED run's
process is still alive, and runs executed in process by the Python API are not watched at all.
A SIGKILLed retrain therefore stayed STARTED forever: the drift sensor skipped the model
("already queued or running") and the queue counted it against `max_concurrent_runs`.

So every retrain records the process that executes it (`retraining/pid`, `retraining/host`,
and the process start time, so a reused pid is not mistaken for the run). `reap_dead_runs` marks a
run whose process is gone as failed; `settle_candidates` then abandons every CANDIDATE version whose
run has ended without a gate decision. Both are plain functions: the `run_health_sensor`, the drift
sensor and the service call them, so the next tick or start puts things right.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import dagster as dg

from retraining_pipelines.io_manager import ModelRegistryResource
from retraining_pipelines.registry import ORPHAN_CANDIDATE_AGE_S, ModelRegistry

PID_TAG = "retraining/pid"
HOST_TAG = "retraining/host"
PROCESS_START_TAG = "retraining/process_start"
#: Runs in these states have a process that should be alive.
LIVE_STATUSES = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
#: A run in one of these states will never reach the gate.
ENDED_STATUSES = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _process_start(pid: int) -> str:
    """The kernel's start time of a process (field 22 of /proc/<pid>/stat), '' where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def worker_tags() -> dict[str, str]:
    """Tags naming the current process as the one executing a run."""
    pid = os.getpid()
    return {PID_TAG: str(pid), HOST_TAG: socket.gethostname(), PROCESS_START_TAG: _process_start(pid)}


def tag_run_worker(instance: dg.DagsterInstance, run_id: str) -> None:
    """Record that this process executes `run_id` (called from the run's first step)."""
    instance.add_run_tags(run_id, worker_tags())


def process_alive(pid: int, started: str = "") -> bool:
    """Whether the process is alive and is the same one (not a new process that reused the pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return not started or _process_start(pid) in ("", started)


def _dead_worker(run: dg.DagsterRun) -> str | None:
    """Why the run's process is known to be gone, or None (alive, elsewhere, or unknown)."""
    tags = run.tags
    if PID_TAG not in tags or tags.get(HOST_TAG) != socket.gethostname():
        return None
    try:
        pid = int(tags[PID_TAG])
    except ValueError:
        return None
    if process_alive(pid, tags.get(PROCESS_START_TAG, "")):
        return None
    return (f"its process (pid {pid} on {tags[HOST_TAG]}) is gone: killed or crashed while the run was "
            f"{run.status.value}")


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark as failed every live-looking run whose process died; returns their run ids."""
    reaped = []
    for run in instance.get_runs(dg.RunsFilter(statuses=LIVE_STATUSES)):
        reason = _dead_worker(run)
        if reason is not None:
            instance.report_run_failed(run, f"Run marked failed by run health: {reason}.")
            reaped.append(run.run_id)
    return reaped


@dataclass
class SettleReport:
    """What one sweep changed, for the sensor's log and the tests."""

    reaped_runs: list[str] = field(default_factory=list)
    abandoned: list[tuple[str, str, str]] = field(default_factory=list)  # (model_type, version, reason)


def settle_candidates(instance: dg.DagsterInstance, registry: ModelRegistry, now: float | None = None
                      ) -> list[tuple[str, str, str]]:
    """Abandon every candidate whose run ended (or is long unknown) before the gate decided."""
    now = time.time() if now is None else now
    abandoned = []
    for candidate in registry.candidates():
        if candidate.run_id is None:
            continue  # registered by hand through the Python API: the caller decides it
        run = instance.get_run_by_id(candidate.run_id)
        if run is None:
            age = now - datetime.fromisoformat(candidate.created_at).timestamp()
            if age < ORPHAN_CANDIDATE_AGE_S:
                continue
            reason = f"run {candidate.run_id} is unknown to this Dagster instance and {age / 3600:.0f} h have passed"
        elif run.status in ENDED_STATUSES:
            reason = f"run {candidate.run_id} ended {run.status.value} before the promotion gate decided"
        else:
            continue
        if registry.abandon(candidate.model_type, candidate.version, reason=reason, run_id=candidate.run_id):
            abandoned.append((candidate.model_type, candidate.version, reason))
    return abandoned


def sweep(instance: dg.DagsterInstance, registry: ModelRegistry) -> SettleReport:
    """Reap dead runs, then settle the candidates they (or any ended run) left behind."""
    reaped = reap_dead_runs(instance)
    return SettleReport(reaped, settle_candidates(instance, registry))


@dg.sensor(
    name="run_health_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks retrains whose process died as failed and abandons candidates whose run ended "
    "before the promotion gate decided.",
)
def run_health_sensor(context: dg.SensorEvaluationContext, model_registry: ModelRegistryResource) -> dg.SkipReason:
    report = sweep(context.instance, model_registry.get())
    for run_id in report.reaped_runs:
        context.log.warning(f"run {run_id} marked failed: its process is gone")
    for model_type, version, reason in report.abandoned:
        context.log.warning(f"{model_type} v{version} abandoned: {reason}")
    return dg.SkipReason(f"{len(report.reaped_runs)} dead run(s) marked failed, "
                         f"{len(report.abandoned)} candidate(s) abandoned")
