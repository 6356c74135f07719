"""A live service for walkthrough tests: `retraining serve` (Dagster UI + daemon) on a free loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from retraining_pipelines import webserver
from retraining_pipelines.runs import PARTITION_TAG, RETRAIN_JOB
from retraining_pipelines.webserver import launch_run

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOCATION = "retraining_pipelines"
REPOSITORY = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `data` of one GraphQL request, through the project's own client (`webserver.graphql`)."""
    return webserver.graphql(url, query, variables)


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The `retraining` console script, as a user types it."""
    return subprocess.run([str(BIN / "retraining"), *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "DAGSTER_HOME": str(home), **(env or {})}, check=False)


def new_home(tmp: Path) -> Path:
    """A DAGSTER_HOME with the project's committed instance config (queue, limits, run monitoring)."""
    home = tmp / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return home


def wait_until_up(url: str, process: subprocess.Popen, log: Callable[[], str] = str, timeout: float = 180) -> None:
    """Until the webserver at `url` answers GraphQL; fails early when its process exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            graphql(url, "{ version }")
            return
        except webserver.WebserverUnavailable:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the Dagster webserver did not start: {log()}") from None
            time.sleep(0.5)


def api_url(ui_url: str) -> str:
    """Where `serving` runs the REST API: the port after the UI's (both checked free)."""
    host, port = ui_url.rsplit(":", 1)
    return f"{host}:{int(port) + 1}"


def _free_pair() -> int:
    """A free port whose successor is free too (the UI and the REST API side by side)."""
    while True:
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue


@contextmanager
def serving(home: Path, env: dict[str, str] | None = None,
            processes: list[subprocess.Popen] | None = None) -> Iterator[str]:
    """`retraining serve` (what scripts/run execs) until the block ends; yields the UI's URL.

    The REST API listens at `api_url(url)`. `processes`, when given, receives the serve process.
    """
    port = _free_pair()
    url = f"http://127.0.0.1:{port}"
    log = open(home / "serve.log", "w")  # noqa: SIM115 - closed below, after the process
    process = subprocess.Popen(
        [str(BIN / "retraining"), "serve", "--port", str(port), "--api-port", str(port + 1)], cwd=ROOT, stdout=log,
        stderr=subprocess.STDOUT, env={**os.environ, "DAGSTER_HOME": str(home), **(env or {})},
        start_new_session=True,
    )
    if processes is not None:
        processes.append(process)
    try:
        wait_until_up(url, process, lambda: (home / "serve.log").read_text()[-2000:])
        yield url
    finally:
        for sig, wait in ((signal.SIGTERM, 90), (signal.SIGKILL, 10)):  # SIGTERM: serve stops dagster dev itself
            try:
                os.killpg(process.pid, sig)
                process.wait(timeout=wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        log.close()


RUN_STATUS = """query Status($runId: ID!) { runOrError(runId: $runId) { ... on Run { status tags { key value } } } }"""
START_SENSOR = """mutation Start($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename ... on Sensor { sensorState { status } } ... on PythonError { message }
  }
}"""
RUNS = """query Runs($filter: RunsFilter) { runsOrError(filter: $filter) { ... on Runs { results { runId status
  tags { key value } } } } }"""


def launch_retrain(url: str, model_type: str, run_config: dict | None = None) -> str:
    """What the UI's Materialize does for one partition: a retrain_model_job run of that model type."""
    return launch_run(url, RETRAIN_JOB, run_config or {}, {PARTITION_TAG: model_type})


def wait_for_run(url: str, run_id: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = graphql(url, RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(2)
    raise TimeoutError(f"run {run_id} did not finish in {timeout:.0f} s")


def wait_until(condition: Callable[[], Any], timeout: float, what: str, every: float = 3.0) -> Any:
    """Poll `condition` until it returns something truthy (returned); fails naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")


def start_sensor(url: str, name: str) -> None:
    answer = graphql(url, START_SENSOR, {"selector": {**REPOSITORY, "sensorName": name}})["startSensor"]
    if answer["__typename"] != "Sensor":
        raise RuntimeError(f"could not start {name}: {answer}")


def runs_tagged(url: str, key: str, value: str) -> list[dict[str, Any]]:
    flt = {"tags": [{"key": key, "value": value}]}
    return graphql(url, RUNS, {"filter": flt})["runsOrError"]["results"]
