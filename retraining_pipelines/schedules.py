"""Schedules and the drift sensor: the job store turned into things the Dagster daemon runs.

* Every daily / weekly / monthly job becomes one `ScheduleDefinition` (built when definitions
  load; a change is picked up by reloading the code location), requesting one run for its model
  type's partition per scheduled time, or skipping the tick with the reason when samples are short.
* One sensor serves every on_drift job. It reads the job store on each tick (so new drift jobs
  need no reload) and hands the decision to `drift_policy.evaluate_drift_jobs` (thresholds,
  cool-down, retries after a rejected retrain, `drift_unresolved`); the sensor only wires it.

The cron rule: the spec counts `schedule_day` 0 = Monday .. 6 = Sunday; cron counts
0 = Sunday, so cron's day is (schedule_day + 1) % 7. Monthly jobs run on the 1st.
"""

import json
import os
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from retraining_pipelines.assets import retrain_model_job, samples_run_config
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.drift_policy import evaluate_drift_jobs
from retraining_pipelines.errors import InsufficientSamplesError
from retraining_pipelines.io_manager import ModelRegistryResource
from retraining_pipelines.jobstore import JOB_ID_TAG, SCHEDULED, JobSpec, JobStore, StoredJob
from retraining_pipelines.notifications import Notifier
from retraining_pipelines.registry import TRIGGER_TAG
from retraining_pipelines.settings import automated_retraining_enabled

#: Spec default: drift detection every 24 h. Override per deployment (seconds).
DRIFT_INTERVAL_ENV = "RETRAINING_DRIFT_INTERVAL_SECONDS"
DEFAULT_DRIFT_INTERVAL_S = 24 * 3600


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
        """Wiring only: the policy is `drift_policy.evaluate_drift_jobs`."""
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
