"""Added and removed jobs appear and disappear in a live Dagster webserver, without a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from retraining_pipelines import AutomatedRetrainingService
from retraining_pipelines.webserver import LOCATION_NAME

from .live import free_port, wait_until_up

ROOT = Path(__file__).resolve().parent.parent
SELECTOR = f'{{repositoryLocationName: "{LOCATION_NAME}", repositoryName: "__repository__"}}'
SCHEDULES = (f"{{ repositoryOrError(repositorySelector: {SELECTOR}) "
             "{ ... on Repository { schedules { name cronSchedule executionTimezone } sensors { name } } } }")


def _graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["data"]


@pytest.fixture
def webserver(isolated_dagster_home: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-webserver")), "-w", str(ROOT / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env={**os.environ, "DAGSTER_HOME": str(isolated_dagster_home)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(url, server)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _schedules(url: str) -> dict[str, dict]:
    return {s["name"]: s for s in _graphql(url, SCHEDULES)["repositoryOrError"]["schedules"]}


def test_jobs_added_and_removed_at_run_time_show_up_in_the_live_ui(webserver: str) -> None:
    before = _schedules(webserver)
    assert "retrain_climate_optimizer_weekly_job1" in before, "the recommended jobs were seeded on first start"
    service = AutomatedRetrainingService(webserver_url=webserver)
    job_id = service.add_job("irrigation_timing", "weekly", schedule_day=6, schedule_time="23:59",
                             timezone="Europe/Madrid")
    name = f"retrain_irrigation_timing_weekly_job{job_id}"
    added = _schedules(webserver)
    assert added[name] == {"name": name, "cronSchedule": "59 23 * * 0", "executionTimezone": "Europe/Madrid"}
    service.remove_job(job_id)
    assert name not in _schedules(webserver)
    assert set(_schedules(webserver)) == set(before)


def test_reload_without_a_webserver_is_a_no_op(isolated_dagster_home: Path) -> None:
    assert AutomatedRetrainingService().reload_code_location() is False
    unreachable = AutomatedRetrainingService(webserver_url=f"http://127.0.0.1:{free_port()}")
    assert unreachable.reload_code_location() is False
