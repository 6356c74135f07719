"""Retrains on Celery workers: the scaled-out deployment's run launcher and the workers' Celery app.

Dagster's `CeleryRunLauncher` (dagster-celery) sends each whole run to a worker as one task, so a
retrain keeps its in-process executor: its four steps share one process and one machine (no
intermediate files crossing hosts, and `runs.py`'s run-health rule still sees one process per
run). The queue stays Dagster's: the daemon dequeues runs under `dagster.yaml`'s limits (one run
per model type, a total cap) and only then hands them to Celery, so the per-model-type limit holds
however many workers listen.

What this module adds to dagster-celery is configuration from one place (`settings`): the broker
and the result backend default to `RETRAINING_CELERY_BROKER` / `RETRAINING_CELERY_BACKEND` (else a
local Redis), so `dagster.yaml` needs no copy of them, and workers start with `retraining worker`
(or `celery -A retraining_pipelines.workers worker`) against the same app.

The result backend must be readable by every process (Redis, not `rpc://`): the daemon's run
monitoring asks it whether a run's task failed (a worker process that died mid-run is reported
as FAILURE by the surviving worker, and the run is failed).
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from dagster import Field, Noneable, StringSource
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task

from retraining_pipelines import settings

#: The queue retrains are sent to (dagster-celery's default); workers listen on it.
QUEUE = "dagster"


def app_args() -> dict[str, Any]:
    """The Celery app settings both sides use: whoever sends and whoever works must agree on them."""
    return {
        "broker": settings.celery_broker(),
        "backend": settings.celery_backend(),
        "config_source": {
            # A retrain is minutes of CPU: a worker takes one at a time, and a task is acknowledged
            # when it starts, so a worker killed mid-run never hands a half-done run to another
            # worker (Dagster refuses to execute a run twice; the run is failed instead).
            "worker_prefetch_multiplier": 1,
            "task_acks_late": False,
            "broker_connection_retry_on_startup": True,
        },
    }


class RetrainCeleryRunLauncher(CeleryRunLauncher):
    """dagster-celery's run launcher, with the broker and backend taken from `settings` when unset."""

    def __init__(self, broker: str | None = None, backend: str | None = None, default_queue: str = QUEUE,
                 inst_data: Any = None, **kwargs: Any) -> None:
        args = app_args()
        super().__init__(default_queue=default_queue, broker=broker or args["broker"],
                         backend=backend or args["backend"],
                         config_source={**args["config_source"], **(kwargs.get("config_source") or {})},
                         include=kwargs.get("include"), inst_data=inst_data)

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        schema = dict(super().config_type())
        schema["broker"] = Field(Noneable(StringSource), is_required=False,
                                 description=f"Unset: ${settings.CELERY_BROKER_ENV}, else "
                                             f"{settings.DEFAULT_CELERY_BROKER}.")
        schema["backend"] = Field(Noneable(StringSource), is_required=False,
                                  description=f"Unset: ${settings.CELERY_BACKEND_ENV}, else "
                                              f"{settings.DEFAULT_CELERY_BACKEND}.")
        return schema

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: dict[str, Any]) -> RetrainCeleryRunLauncher:
        return cls(inst_data=inst_data, **config_value)


#: The workers' app (`celery -A retraining_pipelines.workers worker`): it runs the launcher's tasks.
app = make_app(app_args())
execute_job = create_execute_job_task(app)
resume_job = create_resume_job_task(app)


def task_is_active(task_id: str, timeout_s: float = 3.0) -> bool | None:
    """Whether a live worker is executing the task; None when that cannot be told (the broker is down)."""
    try:
        active = app.control.inspect(timeout=timeout_s).active()
    except Exception:
        return None
    if not active:  # no worker answered: every worker is gone
        return False
    return any(task.get("id") == task_id for tasks in active.values() for task in tasks)


def worker_env(concurrency: int) -> dict[str, str]:
    """What a worker's pool processes need to know: how many retrains share this machine (the thread rule).

    One worker per machine: its concurrency. Several workers on one machine: set
    RETRAINING_RUNS_PER_MACHINE to their total yourself, and it is kept.
    """
    return {settings.RUNS_PER_MACHINE_ENV: os.environ.get(settings.RUNS_PER_MACHINE_ENV) or str(concurrency)}


def worker_command(concurrency: int = 1, name: str | None = None) -> list[str]:
    """The command line of one worker; `concurrency` runs at once (one per core is the most that helps)."""
    return [sys.executable, "-m", "celery", "-A", "retraining_pipelines.workers", "worker", "-Q", QUEUE,
            "--concurrency", str(concurrency), "--pool", "prefork", "--loglevel", "INFO",
            "--hostname", name or f"retrain-{os.getpid()}@{socket.gethostname()}"]
