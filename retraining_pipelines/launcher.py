"""The embedded default's run launcher: each retrain in a fresh child of a process that has the libraries loaded.

Dagster's `DefaultRunLauncher` starts a new Python for every run, which imports Dagster, pandas,
SciPy and scikit-learn again before the retrain itself. On this 2-core machine that was ~2-3 s per
launch for a ~1.5 s retrain (BENCHMARKS.md, "Through the embedded daemon"); on a Pi it is worse.

`WarmRunLauncher` keeps one process that has imported those libraries (a `multiprocessing`
forkserver, started by whichever process launches runs - the daemon - on its first launch) and
forks every run from it. What stays as before:

* **One process per run.** A run is its own child process, so a crash or a SIGKILL ends that run
  only. Its pid is tagged at launch (the tags `runs.py`'s run-health rule reads), and Dagster's run
  monitoring asks `check_run_worker_health`, so a killed run is failed, not left STARTED.
* **Fresh project code.** Only third-party libraries are preloaded (`preload_modules`); the run
  imports `retraining_pipelines` itself (~0.2 s), so an edited catalog or a reloaded code location
  reaches the next run, as with the default launcher.
* **Its memory, in its log.** When the run is over its process reports its peak resident memory
  (an engine event with `peak_rss_mb`): on a Pi, the figure that says whether a window fits. It
  includes the libraries the run shares with the warm process.
* **Termination.** `terminate` marks the run CANCELING and sends SIGTERM to its process, which
  Dagster's execution turns into an interrupt: the run ends CANCELED and its candidate, never
  gated, is abandoned by run health. The signal is repeated every `TERMINATE_REPEAT_S` while the
  run goes on: an interrupt raised while the process happens to run a finalizer (a garbage
  collector's callback) is discarded by Python ("Exception ignored in ..."), and the run then
  finished - and promoted its model - as if Terminate had never been pressed (seen in a test).

The run executes through the same function Dagster's own `dagster api execute_run` and the Celery
workers (`workers.py`) use, so events, failures and interrupts are reported the same way.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from multiprocessing.process import BaseProcess
from typing import Any

import dagster as dg
from dagster._cli.api import _execute_run_command_body
from dagster._core.events import EngineEventData
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._serdes import ConfigurableClass, ConfigurableClassData

from retraining_pipelines.runs import PID_TAG, local_run_process, worker_tags

#: Imported once by the warm process; every run starts with them loaded. Third-party only: the
#: project is imported by each run, so code changes reach the next run. `import dagster` leaves out
#: its storage modules (with Alembic and SQLAlchemy's dialects, ~300 modules): a run paid 0.6 s for
#: them in `DagsterInstance.from_ref` before its first step; `sqlite_storage` brings all of them.
DEFAULT_PRELOAD = ("dagster", "dagster._core.storage.sqlite_storage", "numpy", "pandas", "scipy.stats",
                   "sklearn.ensemble", "sklearn.tree", "sklearn.metrics", "sqlalchemy", "joblib", "threadpoolctl")


#: How often, and how many times, `terminate` repeats its SIGTERM while the run goes on.
TERMINATE_REPEAT_S = 2.0
TERMINATE_REPEATS = 30


def _execute(instance_ref: Any, run_id: str) -> None:
    """A run's process: execute it as `dagster api execute_run` would, SIGTERM meaning "cancel"."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # Dagster turns the interrupt into CANCELED
    with dg.DagsterInstance.from_ref(instance_ref) as instance:
        _execute_run_command_body(run_id, instance, lambda _event: None, set_exit_code_on_failure=False)
        _report_peak_memory(instance, run_id)


def _insist(instance: dg.DagsterInstance, run_id: str, pid: int) -> None:
    """SIGTERM again until the run ends or its process is gone (see the module docstring): a second
    interrupt lands outside the finalizer the first one was lost in."""
    for _ in range(TERMINATE_REPEATS):
        time.sleep(TERMINATE_REPEAT_S)
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished or local_run_process(run) != pid:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return


def _report_peak_memory(instance: dg.DagsterInstance, run_id: str) -> None:
    """The run process's peak resident memory, in the run's log (a process per run makes it the run's)."""
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    run = instance.get_run_by_id(run_id)
    if run is not None:
        instance.report_engine_event(
            f"Run process {os.getpid()} peak memory: {peak_mb:.0f} MB (libraries shared with the warm process too).",
            run, EngineEventData(metadata={"peak_rss_mb": dg.MetadataValue.float(round(peak_mb, 1))}),
            cls=WarmRunLauncher)


class WarmRunLauncher(RunLauncher, ConfigurableClass):
    """Forks each run from a warm process (see the module docstring). Configured in `dagster.yaml`."""

    def __init__(self, preload_modules: Sequence[str] = DEFAULT_PRELOAD,
                 inst_data: ConfigurableClassData | None = None) -> None:
        self._inst_data = inst_data
        self._preload = list(preload_modules)
        self._context: Any = None
        self._processes: dict[str, BaseProcess] = {}
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {"preload_modules": dg.Field([str], is_required=False, default_value=list(DEFAULT_PRELOAD),
                                            description="Modules the warm process imports once for every run.")}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> WarmRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    def _warm(self) -> Any:
        """The forkserver context, preloading on first use (the first launch pays the imports once)."""
        if self._context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(self._preload)
            self._context = context
        return self._context

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        # daemonic: when the service stops, its runs are interrupted and recorded as failed, not orphaned
        process = self._warm().Process(target=_execute, args=(self._instance.get_ref(), run.run_id),
                                       name=f"dagster-run-{run.run_id[:8]}", daemon=True)
        process.start()
        self._processes = {k: p for k, p in self._processes.items() if p.is_alive()}  # forget ended runs
        self._processes[run.run_id] = process
        self._instance.add_run_tags(run.run_id, worker_tags(process.pid))  # terminate and run health need it now
        self._instance.report_engine_event(f"Forked run process {process.pid} from the warm process.", run,
                                           cls=self.__class__)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        pid = local_run_process(run)
        if pid is None:
            return False
        self._instance.report_run_canceling(run)
        os.kill(pid, signal.SIGTERM)
        # the launcher holds its instance weakly; the thread keeps it for the few seconds it needs it
        threading.Thread(target=_insist, args=(self._instance, run_id, pid), daemon=True,
                         name=f"terminate-{run_id[:8]}").start()
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        process = self._processes.get(run.run_id)
        if process is not None and not process.is_alive():
            return CheckRunHealthResult(WorkerStatus.FAILED if process.exitcode else WorkerStatus.SUCCESS,
                                        f"run process {process.pid} exited with code {process.exitcode}")
        if PID_TAG not in run.tags:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no run process recorded yet")
        if local_run_process(run) is None:
            return CheckRunHealthResult(WorkerStatus.FAILED, f"run process {run.tags[PID_TAG]} is gone")
        return CheckRunHealthResult(WorkerStatus.RUNNING)
