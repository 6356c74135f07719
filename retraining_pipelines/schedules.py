"""Schedules and the drift sensor: the job store turned into things the Dagster daemon runs.

* Every daily / weekly / monthly job becomes one `ScheduleDefinition` (built when definitions
  load; a change is picked up by reloading the code location), requesting one run for its model
  type's partition per scheduled time, or skipping the tick with the reason when samples are short.
* One sensor serves every on_drift job. It reads the job store on each tick (so new drift jobs
  need no reload), aggregates the prediction log in SQL, and requests a retrain when the active
  version's accuracy has dropped past the job's threshold - never while a retrain of that model
  is queued or running, within the cool-down after the last one, or twice for the same window.

The cron rule: the spec counts `schedule_day` 0 = Monday .. 6 = Sunday; cron counts
0 = Sunday, so cron's day is (schedule_day + 1) % 7. Monthly jobs run on the 1st.
"""

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg

from retraining_pipelines.assets import retrain_model_job
from retraining_pipelines.datastore import PlantDataStore, Window
from retraining_pipelines.drift import DRIFT_WINDOW, DriftDetector, DriftMetrics
from retraining_pipelines.errors import InsufficientSamplesError
from retraining_pipelines.io_manager import ModelRegistryResource
from retraining_pipelines.jobstore import JOB_ID_TAG, SCHEDULED, JobSpec, JobStore, StoredJob
from retraining_pipelines.notifications import Notifier
from retraining_pipelines.registry import TRIGGER_TAG, ModelRegistry
from retraining_pipelines.settings import automated_retraining_enabled

PARTITION_TAG = "dagster/partition"
#: Spec default: drift detection every 24 h. Override per deployment (seconds).
DRIFT_INTERVAL_ENV = "RETRAINING_DRIFT_INTERVAL_SECONDS"
DRIFT_COOLDOWN_ENV = "RETRAINING_DRIFT_COOLDOWN_HOURS"
DEFAULT_DRIFT_INTERVAL_S = 24 * 3600
DEFAULT_COOLDOWN_H = 12.0
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]


# --------------------------------------------------------------------------- the cron rule
def cron_for(job: JobSpec) -> str:
    """Cron string of a scheduled job (the only place the day-numbering conversion happens)."""
    hour, minute = (int(x) for x in job.schedule_time.split(":"))
    if job.schedule_type == "daily":
        return f"{minute} {hour} * * *"
    if job.schedule_type == "weekly":
        return f"{minute} {hour} * * {(job.schedule_day + 1) % 7}"
    if job.schedule_type == "monthly":
        return f"{minute} {hour} 1 * *"
    raise ValueError(f"{job.schedule_type} jobs have no cron schedule")


def _fires_on(job: JobSpec, day: date) -> bool:
    if job.schedule_type == "weekly":
        return day.weekday() == job.schedule_day
    if job.schedule_type == "monthly":
        return day.day == 1
    return True


def _fire_times(job: JobSpec, around: datetime, days: range) -> list[datetime]:
    """The job's fire times (UTC) on the local days `around` + each offset in `days`."""
    tz = ZoneInfo(job.timezone)
    hour, minute = (int(x) for x in job.schedule_time.split(":"))
    local_day = around.astimezone(tz).date()
    times = []
    for offset in days:
        day = local_day + timedelta(days=offset)
        if _fires_on(job, day):
            times.append(datetime.combine(day, time(hour, minute), tzinfo=tz).astimezone(UTC))
    return times


def next_run(job: JobSpec, after: datetime | None = None) -> datetime | None:
    """First fire time strictly after `after` (default now); None for on_drift jobs."""
    if job.schedule_type not in SCHEDULED:
        return None
    after = after or datetime.now(UTC)
    return next(t for t in _fire_times(job, after, range(0, 63)) if t > after)


def previous_run(job: JobSpec, at: datetime) -> datetime | None:
    """Last fire time at or before `at`; None for on_drift jobs."""
    if job.schedule_type not in SCHEDULED:
        return None
    return next(t for t in reversed(_fire_times(job, at, range(-62, 1))) if t <= at)


# --------------------------------------------------------------------------- schedules
def schedule_name(job: StoredJob) -> str:
    return f"retrain_{job.model_type}_{job.schedule_type}_job{job.job_id}"


def samples_run_config(time_range: str, min_samples: int) -> dict[str, Any]:
    """Run config of `retrain_model_job` (the `training_samples` asset's `SamplesConfig`)."""
    return {"ops": {"training_samples": {"config": {"time_range": time_range, "min_samples": min_samples}}}}


def default_status() -> tuple[dg.DefaultScheduleStatus, dg.DefaultSensorStatus]:
    """Running by default only when ENABLE_AUTOMATED_RETRAINING=true; otherwise toggled in the UI."""
    if automated_retraining_enabled():
        return dg.DefaultScheduleStatus.RUNNING, dg.DefaultSensorStatus.RUNNING
    return dg.DefaultScheduleStatus.STOPPED, dg.DefaultSensorStatus.STOPPED


def scheduled_request(job: StoredJob, store: PlantDataStore, scheduled_time: datetime) -> dg.RunRequest | dg.SkipReason:
    """One run for the job's model type at this tick, or the reason there is none."""
    available = store.count_samples(job.model_type, job.time_range)
    if available < job.min_samples:
        return dg.SkipReason(str(InsufficientSamplesError(job.model_type, available, job.min_samples, job.time_range)))
    return dg.RunRequest(
        run_key=f"{schedule_name(job)}:{scheduled_time.isoformat()}",
        partition_key=job.model_type,
        run_config=samples_run_config(job.time_range, job.min_samples),
        tags={TRIGGER_TAG: "scheduled", JOB_ID_TAG: str(job.job_id)},
    )


def build_schedule(job: StoredJob) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=schedule_name(job),
        cron_schedule=cron_for(job),
        execution_timezone=job.timezone,
        job=retrain_model_job,
        default_status=default_status()[0],
        description=f"Retrain {job.model_type} ({job.schedule_type}, {job.schedule_config}); job {job.job_id}.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext, plant_store: PlantDataStore):
        return scheduled_request(job, plant_store, context.scheduled_execution_time)

    return _schedule


def build_schedules(jobs: list[StoredJob]) -> list[dg.ScheduleDefinition]:
    return [build_schedule(j) for j in jobs if j.schedule_type in SCHEDULED and j.enabled]


# --------------------------------------------------------------------------- drift
@dataclass
class DriftEvaluation:
    """What one drift check over all on_drift jobs decided."""

    run_requests: list[dg.RunRequest] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    measurements: dict[str, DriftMetrics] = field(default_factory=dict)
    cursor: dict[str, Any] = field(default_factory=dict)

    def observations(self) -> list[dg.AssetObservation]:
        """Drift measurements as observations on the model, so the UI shows them per partition."""
        return [
            dg.AssetObservation(asset_key="trained_model", partition=model_type, metadata=_drift_metadata(m))
            for model_type, m in self.measurements.items()
        ]


def _drift_metadata(m: DriftMetrics) -> dict[str, Any]:
    metadata: dict[str, Any] = {"drift_status": m.status, "reason": m.reason,
                                "labelled_predictions": dg.MetadataValue.int(m.sample_count),
                                "model_version": str(m.model_version)}
    for name in ("accuracy_drift", "current_accuracy", "baseline_accuracy", "drifted_feature_share"):
        value = getattr(m, name)
        if value is not None:
            metadata[name] = dg.MetadataValue.float(float(value))
    return metadata


def drift_jobs_by_model(jobs: list[StoredJob]) -> dict[str, StoredJob]:
    """One job per model type: the most sensitive (lowest threshold) when several watch it."""
    chosen: dict[str, StoredJob] = {}
    for job in jobs:
        if job.schedule_type == "on_drift" and job.enabled:
            best = chosen.get(job.model_type)
            if best is None or job.drift_threshold < best.drift_threshold:
                chosen[job.model_type] = job
    return chosen


def cooldown() -> timedelta:
    return timedelta(hours=float(os.environ.get(DRIFT_COOLDOWN_ENV, DEFAULT_COOLDOWN_H)))


def evaluate_drift_jobs(
    jobs: list[StoredJob],
    instance: dg.DagsterInstance,
    store: PlantDataStore,
    registry: ModelRegistry,
    notifier: Notifier,
    cursor: dict[str, Any] | None = None,
    now: datetime | None = None,
    window: str = DRIFT_WINDOW,
) -> DriftEvaluation:
    """Decide, for each watched model type, whether to request a retrain now (and why not)."""
    now = now or datetime.now(UTC)
    result = DriftEvaluation(cursor=dict(cursor or {}))
    detector = DriftDetector(registry, store)
    span = Window.last(window, now)
    for model_type, job in drift_jobs_by_model(jobs).items():
        busy = _busy_reason(instance, model_type, now)
        if busy:
            result.skipped[model_type] = busy
            continue
        metrics = detector.check_logged(model_type, window, job.drift_threshold, end=now)
        result.measurements[model_type] = metrics
        reason = _not_triggering_reason(metrics, job, store, result.cursor.get(model_type), span)
        if reason:
            result.skipped[model_type] = reason
            continue
        result.run_requests.append(_drift_request(job, metrics, span))
        result.cursor[model_type] = {"version": metrics.model_version, "window_end": span.end_ts}
        notifier.send(_drift_event(job, metrics), f"Drift detected: {model_type} v{metrics.model_version}, "
                      f"{metrics.reason}; retraining")
    return result


def _busy_reason(instance: dg.DagsterInstance, model_type: str, now: datetime) -> str | None:
    """A retrain in flight, or one too recent: a drift retrain now would only duplicate it."""
    in_flight = instance.get_runs(dg.RunsFilter(tags={PARTITION_TAG: model_type}, statuses=IN_FLIGHT), limit=1)
    if in_flight:
        return f"a retrain of {model_type} is already queued or running (run {in_flight[0].run_id[:8]})"
    records = instance.get_run_records(dg.RunsFilter(tags={PARTITION_TAG: model_type}), limit=1)
    if records:
        started = datetime.fromtimestamp(records[0].create_timestamp.timestamp(), UTC)
        wait = cooldown()
        if now - started < wait:
            ago, limit = (now - started).total_seconds() / 3600, wait.total_seconds() / 3600
            return f"last retrain of {model_type} was {ago:.1f} h ago, within the {limit:g} h cool-down"
    return None


def _not_triggering_reason(metrics: DriftMetrics, job: StoredJob, store: PlantDataStore,
                           last: dict[str, Any] | None, span: Window) -> str | None:
    if not metrics.requires_retraining:
        return metrics.reason
    window_s = span.end_ts - span.start_ts
    if last and last.get("version") == metrics.model_version and span.end_ts - last["window_end"] < window_s:
        return f"already triggered for v{metrics.model_version} on this window ({metrics.reason})"
    available = store.count_samples(job.model_type, job.time_range)
    if available < job.min_samples:
        return f"drift, but {InsufficientSamplesError(job.model_type, available, job.min_samples, job.time_range)}"
    return None


def _drift_request(job: StoredJob, metrics: DriftMetrics, span: Window) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"drift:{job.model_type}:{metrics.model_version}:{span.end_ts}",
        partition_key=job.model_type,
        run_config=samples_run_config(job.time_range, job.min_samples),
        tags={
            TRIGGER_TAG: "drift",
            JOB_ID_TAG: str(job.job_id),
            "retraining/accuracy_drift": f"{metrics.accuracy_drift:.4f}",
            "retraining/baseline_accuracy": f"{metrics.baseline_accuracy:.4f}",
            "retraining/current_accuracy": f"{metrics.current_accuracy:.4f}",
            "retraining/labelled_predictions": str(metrics.sample_count),
        },
    )


def _drift_event(job: StoredJob, metrics: DriftMetrics) -> dict[str, Any]:
    return {"type": "drift_detected", "model_type": job.model_type, "model_version": metrics.model_version,
            "job_id": job.job_id, "accuracy_drift": metrics.accuracy_drift, "threshold": job.drift_threshold,
            "baseline_accuracy": metrics.baseline_accuracy, "current_accuracy": metrics.current_accuracy,
            "labelled_predictions": metrics.sample_count}


def drift_interval_seconds() -> int:
    return int(os.environ.get(DRIFT_INTERVAL_ENV, DEFAULT_DRIFT_INTERVAL_S))


def build_drift_sensor(job_store: JobStore) -> dg.SensorDefinition:
    @dg.sensor(
        name="drift_sensor",
        job=retrain_model_job,
        minimum_interval_seconds=drift_interval_seconds(),
        default_status=default_status()[1],
        description="Watches every on_drift job: retrains a model when its logged accuracy drops past "
        "the job's threshold (relative to its validation accuracy).",
    )
    def drift_sensor(
        context: dg.SensorEvaluationContext,
        plant_store: PlantDataStore,
        model_registry: ModelRegistryResource,
        notifier: Notifier,
    ) -> dg.SensorResult:
        evaluation = evaluate_drift_jobs(
            job_store.list("on_drift"), context.instance, plant_store, model_registry.get(), notifier,
            json.loads(context.cursor) if context.cursor else None,
        )
        skip = "; ".join(f"{m}: {r}" for m, r in evaluation.skipped.items()) or "no on_drift jobs"
        return dg.SensorResult(
            run_requests=evaluation.run_requests,
            skip_reason=None if evaluation.run_requests else dg.SkipReason(skip),
            cursor=json.dumps(evaluation.cursor),
            asset_events=evaluation.observations(),
        )

    return drift_sensor
