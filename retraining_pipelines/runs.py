"""Retrain runs: what each one did, and run health (no run stays STARTED after its process died,
no candidate outlives its run).

`describe_run` reads a retrain's outcome from Dagster's own records (the run's status, its
`validation_metrics` result, the root cause of a failed step): one record of every run, shared
by the Python API, the CLI and the REST API.

Dagster's run monitoring (enabled in `dagster_home/dagster.yaml`) fails runs that never start and
runs past `max_runtime_seconds`, but Dagster's default run launcher cannot tell whether a STARTED
run's process is still alive, and runs executed in process by the Python API are not watched at
all. A SIGKILLed retrain therefore stayed STARTED forever: the drift sensor skipped the model
("already queued or running") and the queue counted it against `max_concurrent_runs`. (The
embedded default's `launcher.WarmRunLauncher` answers run monitoring from the same pid tags.)

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
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from retraining_pipelines.catalog import MODEL_TYPES
from retraining_pipelines.errors import InvalidFieldError
from retraining_pipelines.io_manager import ModelRegistryResource
from retraining_pipelines.registry import ORPHAN_CANDIDATE_AGE_S, ModelRegistry, trigger_from_tags

PARTITION_TAG = "dagster/partition"  # our partitions are model types
RETRAIN_JOB = "retrain_model_job"
#: A run in one of these states is queued or running: a second retrain of its model would race it.
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]
PID_TAG = "retraining/pid"
HOST_TAG = "retraining/host"
PROCESS_START_TAG = "retraining/process_start"
#: dagster-celery's tag naming the Celery task that executes a run (the scaled-out deployment).
CELERY_TASK_TAG = "dagster-celery/task_id"
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


def worker_tags(pid: int | None = None) -> dict[str, str]:
    """Tags naming a process of this host (default: the current one) as the one executing a run."""
    pid = os.getpid() if pid is None else pid
    return {PID_TAG: str(pid), HOST_TAG: socket.gethostname(), PROCESS_START_TAG: _process_start(pid)}


def tag_run_worker(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """Record that this process executes `run` (called from the run's first step), unless its tags say so
    already: the service tags the runs it executes itself when it creates them, which saves a write."""
    tags = worker_tags()
    if any(run.tags.get(key) != value for key, value in tags.items()):
        instance.add_run_tags(run.run_id, tags)


def process_alive(pid: int, started: str = "") -> bool:
    """Whether the process is alive and is the same one (not a new process that reused the pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return not started or _process_start(pid) in ("", started)


def local_run_process(run: dg.DagsterRun) -> int | None:
    """The pid of the run's process when it runs on this host and is still that process; else None.
    The one rule behind run health here and `launcher.WarmRunLauncher` (terminate, worker health)."""
    tags = run.tags
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return None
    pid = int(tags[PID_TAG])
    return pid if process_alive(pid, tags.get(PROCESS_START_TAG, "")) else None


def _dead_worker(run: dg.DagsterRun) -> str | None:
    """Why the run's process is known to be gone, or None (alive, or unknown)."""
    tags = run.tags
    if PID_TAG not in tags:
        return None
    if tags.get(HOST_TAG) != socket.gethostname():
        return _lost_celery_task(run) if CELERY_TASK_TAG in tags else None
    if not tags[PID_TAG].isdigit() or local_run_process(run) is not None:
        return None
    return (f"its process (pid {tags[PID_TAG]} on {tags[HOST_TAG]}) is gone: killed or crashed while the run was "
            f"{run.status.value}")


def _lost_celery_task(run: dg.DagsterRun) -> str | None:
    """A run on another host's Celery worker is dead when no live worker reports its task as active.

    A pid means nothing across hosts; the workers themselves answer (the whole worker host may be
    gone, which leaves the task STARTED in the result backend forever, so Dagster's own run
    monitoring would wait for it).
    """
    from retraining_pipelines import workers  # dagster-celery: only where runs carry its task tag

    task_id = run.tags[CELERY_TASK_TAG]
    if workers.task_is_active(task_id) is not False:
        return None
    return (f"no Celery worker runs its task {task_id} any more (its worker on {run.tags.get(HOST_TAG)} was "
            f"killed or lost) while the run was {run.status.value}")


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


@dataclass(frozen=True)
class RunReport:
    """One retrain run as a user asks after it: where it stands and how it ended."""

    run_id: str
    model_type: str | None
    status: str  # Dagster's run status, e.g. QUEUED, STARTED, SUCCESS, FAILURE
    trigger: str
    created_at: str
    outcome: str | None  # promoted / rejected once SUCCESS; failed once FAILURE or CANCELED
    result: dict[str, Any] | None = None  # the RetrainingResult, once the gate decided
    error: str | None = None  # the root cause of a failed run

    @property
    def done(self) -> bool:
        return self.status in {s.value for s in ENDED_STATUSES}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def active_retrains(instance: dg.DagsterInstance, model_type: str) -> list[str]:
    """Run ids of retrains of `model_type` that are queued or running."""
    runs = instance.get_runs(dg.RunsFilter(tags={PARTITION_TAG: model_type}, statuses=IN_FLIGHT), limit=5)
    return [run.run_id for run in runs]


def describe_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunReport:
    """The report of a retrain run, from the instance's event log."""
    result, error = None, None
    if run.status == dg.DagsterRunStatus.SUCCESS:
        result = _gate_result(instance, run.run_id)
    elif run.status in ENDED_STATUSES:
        failures = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        reasons = [step_failure_reason(e.dagster_event) for e in failures if e.dagster_event]
        error = "; ".join(reasons) or f"the run ended {run.status.value.lower()}"
    outcome = None
    if result is not None:
        outcome = "promoted" if result.get("promoted") else "rejected"
    elif run.status in ENDED_STATUSES:
        outcome = "failed"
    record = instance.get_run_record_by_id(run.run_id)
    created = record.create_timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if record else ""
    return RunReport(run_id=run.run_id, model_type=run.tags.get(PARTITION_TAG), status=run.status.value,
                     trigger=trigger_from_tags(run.tags), created_at=created, outcome=outcome, result=result,
                     error=error)


def _gate_result(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any] | None:
    """The RetrainingResult the run's `validation_metrics` recorded (None if the gate never ran)."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.asset_materialization
        if materialization and materialization.asset_key == dg.AssetKey("validation_metrics"):
            value = materialization.metadata.get("result")
            return dict(value.value) if value is not None else None
    return None


def step_failure_reason(event: dg.DagsterEvent) -> str:
    """A failed step's own words: the `Failure` description we raised, else the root cause.

    Dagster wraps an unexpected exception in "Error occurred while executing op ...", which names
    the step but not the problem; the first cause past Dagster's wrappers (e.g. `KeyError: 'durian'`) is what a
    grower needs in the run's error, the notification and the CLI answer.
    """
    data = event.step_failure_data
    if data.user_failure_data and data.user_failure_data.description:
        return f"{event.step_key}: {data.user_failure_data.description}"
    error = data.error
    if error is None:
        return f"{event.step_key}: failed"
    while error.cause is not None and (error.cls_name or "").startswith("Dagster"):  # unwrap Dagster's wrappers
        error = error.cause
    return f"{event.step_key}: {error.message.strip()}"


class RetrainRunCoordinator(dg.QueuedRunCoordinator):
    """The instance's queue, refusing at launch a retrain that names no known model type.

    Without the `dagster/partition` tag (or with a model type that does not exist) a retrain
    would be queued and fail inside the run; a GraphQL client would only learn that from the run's
    logs. Here the launch itself fails with the list of model types, and the refused run is marked
    failed at once, so it never counts as queued. Configured in `dagster_home/dagster.yaml`.
    """

    def submit_run(self, context: dg.SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        if run.job_name == RETRAIN_JOB and run.tags.get(PARTITION_TAG) not in MODEL_TYPES:
            message = (f"{RETRAIN_JOB} needs the tag {PARTITION_TAG} set to one of {', '.join(MODEL_TYPES)} "
                       f"(got {run.tags.get(PARTITION_TAG)!r}); the run was not queued.")
            self._instance.report_run_failed(run, message)
            raise InvalidFieldError(PARTITION_TAG, run.tags.get(PARTITION_TAG), MODEL_TYPES)
        return super().submit_run(context)
