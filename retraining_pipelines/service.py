"""`AutomatedRetrainingService`: the spec's Python API over the Dagster pipeline.

It is a thin facade: jobs go to the job store (and the code location is reloaded so their
schedules appear), retrains run the same `retrain_model_job` the UI runs - in process, recorded in
the same Dagster instance - and drift is judged by the same detector the sensor uses.
`AutomatedRetrainingService()` with no arguments uses the DAGSTER_HOME defaults.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import sqlalchemy

from retraining_pipelines import validation, webserver
from retraining_pipelines.assets import RETRAIN_ASSETS, retrain_model_job, samples_run_config
from retraining_pipelines.catalog import get_spec
from retraining_pipelines.code_location import build_definitions, default_resources
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.drift import DRIFT_WINDOW, DriftDetector, DriftMetrics
from retraining_pipelines.drift_policy import drift_jobs_by_model, evaluate_drift_jobs
from retraining_pipelines.errors import (
    InsufficientSamplesError,
    InvalidFieldError,
    RetrainingError,
    RetrainingSkipped,
    RetrainInProgress,
    StorageError,
)
from retraining_pipelines.io_manager import ModelRegistryResource, release_run
from retraining_pipelines.jobstore import JOB_ID_TAG, SCHEDULED, JobStore, StoredJob, validate_job
from retraining_pipelines.notifications import Notifier, rolled_back_event
from retraining_pipelines.promotion import RetrainingResult
from retraining_pipelines.registry import TRIGGER_TAG, TRIGGERS, ModelStatus, ModelVersion
from retraining_pipelines.runs import (
    PARTITION_TAG,
    RETRAIN_JOB,
    RunReport,
    active_retrains,
    describe_run,
    settle_candidates,
    step_failure_reason,
    sweep,
    worker_tags,
)
from retraining_pipelines.schedules import next_run, previous_run
from retraining_pipelines.settings import dagster_home

logger = logging.getLogger(__name__)
#: What `check_and_execute_jobs` remembers between calls (the drift sensor keeps its own cursor).
DRIFT_CURSOR = "service_drift_cursor.json"
#: A retrain run here logs its steps' events to the console at INFO (the gate's verdict, warnings,
#: failures), not Dagster's default DEBUG: its ~67 events are all in the instance for the UI either way,
#: and printing each one cost ~0.01-0.05 s of a warm retrain (issue 11) and flooded the caller's terminal.
CONSOLE_LOGGING = {"console": {"config": {"log_level": "INFO"}}}


@dataclass(frozen=True)
class RetrainingJob:
    """The spec's `RetrainingJob`, plus the job's settings and how its last run ended."""

    job_id: int
    model_type: str
    schedule_type: str
    schedule_config: dict[str, Any]
    last_run: datetime | None
    next_run: datetime | None
    min_samples: int
    time_range: str
    last_outcome: str | None = None
    last_run_id: str | None = None

    @property
    def drift_threshold(self) -> float | None:
        """An on_drift job's threshold (None for scheduled jobs), as the spec's examples read it."""
        return self.schedule_config.get("drift_threshold")

    def to_dict(self) -> dict[str, Any]:
        """The spec's JSON shape (times as ISO 8601 UTC with `Z`)."""
        def stamp(t: datetime | None) -> str | None:
            return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else None

        return {"job_id": self.job_id, "model_type": self.model_type, "schedule_type": self.schedule_type,
                "schedule_config": self.schedule_config, "last_run": stamp(self.last_run),
                "next_run": stamp(self.next_run), "min_samples": self.min_samples, "time_range": self.time_range,
                "last_outcome": self.last_outcome}


def _summary(model_type: str, versions: list[ModelVersion]) -> dict[str, Any]:
    active = next((v for v in versions if v.status == ModelStatus.ACTIVE), None)
    return {"model_type": model_type, "active_version": active.version if active else None,
            "metrics": active.metrics if active else None, "versions": len(versions)}


@dataclass(frozen=True)
class JobExecution:
    """What `check_and_execute_jobs` did for one job."""

    job_id: int
    model_type: str
    trigger: str
    result: RetrainingResult | None = None
    skipped: str | None = None


class AutomatedRetrainingService:
    """Schedule, trigger, inspect and roll back retraining - the spec's API."""

    def __init__(
        self,
        *,
        instance: dg.DagsterInstance | None = None,
        plant_store: PlantDataStore | None = None,
        model_registry: ModelRegistryResource | None = None,
        notifier: Notifier | None = None,
        job_store: JobStore | None = None,
        webserver_url: str | None = None,
    ) -> None:
        self.plant_store = plant_store or PlantDataStore()
        self.model_registry = model_registry or ModelRegistryResource()
        self.notifier = notifier or Notifier()
        self.jobs = job_store or JobStore()
        self.webserver_url = webserver_url or os.environ.get(webserver.WEBSERVER_URL_ENV)
        self._instance = instance

    # ------------------------------------------------------------------ wiring
    @property
    def instance(self) -> dg.DagsterInstance:
        if self._instance is None:
            home = os.environ.get("DAGSTER_HOME") or str(dagster_home())
            try:
                self._instance = dg.DagsterInstance.from_config(home)
            except (OSError, dg.DagsterError, sqlalchemy.exc.SQLAlchemyError) as err:
                raise StorageError("Dagster instance", home, err) from err
        return self._instance

    @property
    def registry(self):
        return self.model_registry.get()

    def resources(self) -> dict[str, Any]:
        return default_resources(self.plant_store, self.model_registry, self.notifier)

    def definitions(self) -> dg.Definitions:
        return build_definitions(job_store=self.jobs, resources=self.resources())

    @functools.cached_property
    def _retrain_job(self) -> dg.JobDefinition:
        """The retrain job alone, built once per service.

        A retrain needs neither the schedules nor the sensors, which are built from the job store:
        with 1,000 stored jobs that took 0.2-0.5 s on every retrain (issue 11).
        """
        return dg.Definitions(assets=RETRAIN_ASSETS, jobs=[retrain_model_job], resources=self.resources(),
                              executor=dg.in_process_executor).resolve_job_def(RETRAIN_JOB)

    # ------------------------------------------------------------------ jobs
    def add_job(
        self,
        model_type: str,
        schedule_type: str,
        schedule_day: int | None = None,
        schedule_time: str | None = None,
        drift_threshold: float | None = None,
        min_samples: int | None = None,
        timezone: str = "UTC",
        time_range: str = "last_90d",
        drift_signal: str | None = None,
    ) -> int:
        """Register a retraining job; returns its `job_id`. Invalid input stores nothing.

        `drift_signal` (on_drift jobs): `accuracy` (default), `inputs` or `either` - see `jobstore`."""
        job = validate_job(model_type, schedule_type, schedule_day, schedule_time, drift_threshold, min_samples,
                           timezone, time_range, drift_signal)
        job_id = self.jobs.add(job)
        self.reload_code_location()
        return job_id

    def remove_job(self, job_id: int) -> None:
        self.jobs.remove(job_id)
        self.reload_code_location()

    def get_retraining_schedule(self, now: datetime | None = None) -> list[RetrainingJob]:
        """Every job with its last run (from Dagster's run history) and next run (from the cron rule)."""
        if now is not None:
            validation.aware_datetime("now", now)
        return [self._describe(job, now) for job in self.jobs.list()]

    def _describe(self, job: StoredJob, now: datetime | None) -> RetrainingJob:
        last = self.instance.get_run_records(dg.RunsFilter(tags={JOB_ID_TAG: str(job.job_id)}), limit=1)
        last_run = last[0].create_timestamp.astimezone(UTC) if last else None
        run_id = last[0].dagster_run.run_id if last else None
        return RetrainingJob(
            job_id=job.job_id, model_type=job.model_type, schedule_type=job.schedule_type,
            schedule_config=job.schedule_config, last_run=last_run, next_run=next_run(job, now),
            min_samples=job.min_samples, time_range=job.time_range,
            last_outcome=self._outcome(last[0].dagster_run) if last else None, last_run_id=run_id,
        )

    def _outcome(self, run: dg.DagsterRun) -> str:
        """promoted / rejected for finished retrains (as `describe_run` reads them), else the run's own status."""
        outcome = describe_run(self.instance, run).outcome
        return outcome if outcome in ("promoted", "rejected") else run.status.value.lower()

    def reload_code_location(self) -> bool:
        """Ask a running webserver to reload our code location so schedule changes show at once.

        Without a webserver (or when it is unreachable) the change is still stored; the daemon picks
        it up on its next workspace refresh.
        """
        if not self.webserver_url:
            return False
        try:
            return webserver.reload_location(self.webserver_url)
        except RetrainingError as err:
            logger.warning("could not reload code location: %s", err)
            return False

    # ------------------------------------------------------------------ retraining
    def retrain_model(
        self,
        model_type: str,
        force: bool = False,
        min_samples: int | None = None,
        time_range: str = "last_90d",
        trigger: str = "manual",
        tags: dict[str, str] | None = None,
    ) -> RetrainingResult:
        """Retrain now. Without `force`, a model whose logged accuracy shows no drift is left alone.

        Raises RetrainingSkipped (no drift), InsufficientSamplesError (too little data: nothing is
        run) or RetrainingError (the run failed; the active model is untouched).
        """
        run_config = self._prepare_retrain(model_type, force, min_samples, time_range, trigger)
        run = self._execute(model_type, run_config, {TRIGGER_TAG: trigger, **(tags or {})})
        return RetrainingResult(**run.asset_value("validation_metrics"))

    def submit_retrain(self, model_type: str, force: bool = False, min_samples: int | None = None,
                       time_range: str = "last_90d") -> str:
        """Queue a retrain on the instance (through the webserver, as the UI does); returns its run id.

        The same checks as `retrain_model` run first, plus one: a retrain of this model type already
        queued or running raises `RetrainInProgress` with its run id. Queued runs obey the instance's
        limits (one per model type, two at once) and show in the UI like any other.
        """
        get_spec(model_type)
        busy = active_retrains(self.instance, model_type)
        if busy:
            raise RetrainInProgress(model_type, busy[0])
        run_config = self._prepare_retrain(model_type, force, min_samples, time_range, "manual")
        if not self.webserver_url:
            raise webserver.WebserverUnavailable(f"Queuing a retrain needs the Dagster webserver: set "
                                                 f"{webserver.WEBSERVER_URL_ENV} or start scripts/run.")
        return webserver.launch_run(self.webserver_url, RETRAIN_JOB, run_config,
                                    {PARTITION_TAG: model_type, TRIGGER_TAG: "manual"})

    def _prepare_retrain(self, model_type: str, force: bool, min_samples: int | None, time_range: str,
                         trigger: str) -> dict[str, Any]:
        """Every check a retrain needs before anything runs; returns its run config."""
        spec = get_spec(model_type)
        validation.flag("force", force)
        if trigger not in TRIGGERS:
            raise InvalidFieldError("trigger", trigger, TRIGGERS)
        required = spec.min_samples if min_samples is None else validation.min_samples(min_samples)
        validation.time_range(time_range)
        if not force:
            watching = drift_jobs_by_model(self.jobs.list("on_drift")).get(model_type)
            metrics = self.check_drift(model_type, threshold=watching.drift_threshold if watching else None,
                                       with_features=False)  # the verdict only, no feature report
            if metrics.status == "stable":
                raise RetrainingSkipped(f"No drift detected for {model_type}: {metrics.reason}. "
                                        "Pass force=True to retrain anyway.")
        available = self.plant_store.count_samples(model_type, time_range)
        if available < required:
            raise InsufficientSamplesError(model_type, available, required, time_range)
        return samples_run_config(time_range, required)

    def run_report(self, run_id: str) -> RunReport:
        """Where a retrain run stands and, once it ended, how (promoted / rejected / failed and why)."""
        validation.text("run_id", run_id, max_chars=64)
        run = self.instance.get_run_by_id(run_id)
        if run is None or run.job_name != RETRAIN_JOB:
            raise InvalidFieldError("run_id", run_id, "the id of a retrain_model_job run")
        return describe_run(self.instance, run)

    def history(self, model_type: str | None = None, limit: int = 20) -> list[RunReport]:
        """The latest retrain runs (newest first), with their outcomes."""
        if model_type is not None:
            get_spec(model_type)
        validation.whole("limit", limit, 1, 1000)
        tags = {PARTITION_TAG: model_type} if model_type else {}
        runs = self.instance.get_runs(dg.RunsFilter(job_name=RETRAIN_JOB, tags=tags), limit=limit)
        return [describe_run(self.instance, run) for run in runs]

    def _execute(self, model_type: str, run_config: dict[str, Any], tags: dict[str, str]) -> dg.ExecuteInProcessResult:
        """Run a retrain in this process, recorded in the instance; a failed run leaves no candidate."""
        sweep(self.instance, self.registry)  # runs a killed process left STARTED must not linger
        job = self._retrain_job
        run = job.execute_in_process(partition_key=model_type, run_config={**run_config, "loggers": CONSOLE_LOGGING},
                                     instance=self.instance,
                                     tags={**tags, **worker_tags()}, raise_on_error=False)
        release_run(run.run_id)  # what its steps handed each other in memory: a long-lived service keeps none
        if not run.success:
            settle_candidates(self.instance, self.registry)
            reasons = "; ".join(step_failure_reason(e) for e in run.get_step_failure_events())
            raise RetrainingError(f"Retraining {model_type} failed (run {run.run_id}): {reasons}")
        return run

    def check_drift(self, model_type: str, window: str = DRIFT_WINDOW, threshold: float | None = None,
                    with_features: bool = True) -> DriftMetrics:
        """Drift of the active version from the prediction log (see `drift.py` for the definition), with
        the per-feature shift report unless `with_features` is False."""
        return DriftDetector(self.registry, self.plant_store).check_logged(model_type, window, threshold,
                                                                          with_features=with_features)

    def check_and_execute_jobs(self, now: datetime | None = None) -> list[JobExecution]:
        """Run every scheduled job that is due and every drift job whose model drifted, once.

        For deployments without the Dagster daemon (a cron entry can call this) and for tests.
        A scheduled job is due when a fire time has passed since its last run (or its creation).
        """
        now = datetime.now(UTC) if now is None else validation.aware_datetime("now", now)
        done = [self._run_if_due(job, now) for job in self.jobs.list() if job.schedule_type in SCHEDULED]
        cursor_file = dagster_home() / DRIFT_CURSOR
        cursor = json.loads(cursor_file.read_text()) if cursor_file.exists() else None
        evaluation = evaluate_drift_jobs(self.jobs.list("on_drift"), self.instance, self.plant_store, self.registry,
                                         self.notifier, cursor, now=now)
        cursor_file.write_text(json.dumps(evaluation.cursor))
        for request in evaluation.run_requests:
            run = self._execute(request.partition_key, request.run_config, dict(request.tags))
            done.append(JobExecution(int(request.tags[JOB_ID_TAG]), request.partition_key, "drift",
                                     result=RetrainingResult(**run.asset_value("validation_metrics"))))
        watching = drift_jobs_by_model(self.jobs.list("on_drift"))
        done += [JobExecution(watching[m].job_id, m, "drift", skipped=why) for m, why in evaluation.skipped.items()]
        return done

    def _run_if_due(self, job: StoredJob, now: datetime) -> JobExecution:
        last = self._describe(job, now).last_run or datetime.fromisoformat(job.created_at)
        fired = previous_run(job, now)
        if fired is None or fired <= last:
            return JobExecution(job.job_id, job.model_type, "scheduled",
                                skipped=f"not due (next run {next_run(job, now)})")
        try:
            result = self.retrain_model(job.model_type, force=True, min_samples=job.min_samples,
                                        time_range=job.time_range, trigger="scheduled",
                                        tags={JOB_ID_TAG: str(job.job_id)})
        except InsufficientSamplesError as err:
            return JobExecution(job.job_id, job.model_type, "scheduled", skipped=str(err))
        return JobExecution(job.job_id, job.model_type, "scheduled", result=result)

    # ------------------------------------------------------------------ models and health
    def model_summary(self, model_type: str) -> dict[str, Any]:
        """What is served for a model type: its active version and that version's validation metrics."""
        return _summary(model_type, self.registry.list_versions(model_type))

    def model_details(self, model_type: str) -> dict[str, Any]:
        """Every version of a model type (newest first) and its audit trail (oldest first)."""
        versions = self.registry.list_versions(model_type)
        return {**_summary(model_type, versions), "versions": [v.to_dict() for v in versions],
                "audit_trail": [asdict(e) for e in self.registry.audit_trail(model_type)]}

    def health(self) -> dict[str, Any]:
        """Whether each store answers, and the webserver that queues runs; `ok` only if all do."""
        checks: dict[str, str] = {}
        probes = {"plant_database": self.plant_store.is_empty, "model_registry": self.registry.candidates,
                  "job_store": self.jobs.list, "dagster_instance": lambda: self.instance.get_runs(limit=1)}
        for name, probe in probes.items():
            try:
                probe()
                checks[name] = "ok"
            except RetrainingError as err:
                checks[name] = str(err)
        if not self.webserver_url:
            checks["webserver"] = f"not configured ({webserver.WEBSERVER_URL_ENV})"
        else:
            try:
                webserver.graphql(self.webserver_url, "{ version }")
                checks["webserver"] = "ok"
            except RetrainingError as err:
                checks["webserver"] = str(err)
        return {"status": "ok" if all(v == "ok" for v in checks.values()) else "degraded", "checks": checks}

    # ------------------------------------------------------------------ rollback
    def rollback(self, model_type: str, to_version: str | None = None,
                 reason: str = "manual rollback") -> tuple[str, str]:
        """Restore the previous (or a named) version; returns (from_version, to_version)."""
        old, new = self.registry.rollback(model_type, to_version, reason=reason)
        self.notifier.send(*rolled_back_event(model_type, old, new, reason))
        return old, new
