"""A live service for walkthrough tests: `retraining serve` (Dagster UI + daemon) on a free loopback port."""

from __future__ import annotations

import os
import random
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


# Below the kernel's ephemeral range (32768-60999 on Linux): a port the OS hands out for `bind(0)` is one a
# code server or outgoing connection of another test worker may take between our check and our server's bind.
_PORTS = range(20000, 32000)
_BIND_RACE = "address already in use"


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(span: int = 1) -> int:
    """A port (and the `span - 1` after it) free now, outside the range the OS assigns to others."""
    while True:
        port = random.randrange(_PORTS.start, _PORTS.stop - span)
        if all(_bindable(port + i) for i in range(span)):
            return port


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


@contextmanager
def serving(home: Path, env: dict[str, str] | None = None,
            processes: list[subprocess.Popen] | None = None) -> Iterator[str]:
    """`retraining serve` (what scripts/run execs) until the block ends; yields the UI's URL.

    The REST API listens at `api_url(url)`. `processes`, when given, receives the serve process.
    """
    for attempt in range(3):
        port = free_port(span=2)
        url = f"http://127.0.0.1:{port}"
        log = open(home / "serve.log", "w")  # noqa: SIM115 - closed below, after the process
        process = subprocess.Popen(
            [str(BIN / "retraining"), "serve", "--port", str(port), "--api-port", str(port + 1)], cwd=ROOT,
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "DAGSTER_HOME": str(home), **(env or {})},
            start_new_session=True,
        )
        try:
            wait_until_up(url, process, lambda: (home / "serve.log").read_text()[-2000:])
            break
        except RuntimeError as err:
            _stop(process, log)
            # another test process took a port between our check and serve's bind: pick others
            if _BIND_RACE not in str(err) or attempt == 2:
                raise
    if processes is not None:
        processes.append(process)
    try:
        yield url
    finally:
        _stop(process, log)


def _stop(process: subprocess.Popen, log: Any) -> None:
    """SIGTERM the serve process group (serve stops `dagster dev` itself), SIGKILL if it hangs."""
    for sig, wait in ((signal.SIGTERM, 90), (signal.SIGKILL, 10)):
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
