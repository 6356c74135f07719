"""README walkthroughs, run as written through the real service (`retraining serve`: UI + daemon)."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest

from benchmarks.drift_demo import hindsight_accuracy, noise
from retraining_pipelines import validation
from retraining_pipelines.assets import samples_run_config
from retraining_pipelines.catalog import get_spec
from retraining_pipelines.cli import HELD_BACK
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.jobstore import DRIFT_TIME_RANGE
from retraining_pipelines.plantdb import DAY
from retraining_pipelines.registry import ModelRegistry
from retraining_pipelines.runs import PARTITION_TAG

from .live import (
    api_url,
    cli,
    launch_retrain,
    new_home,
    runs_tagged,
    serving,
    start_sensor,
    wait_for_run,
    wait_until,
)

MODEL = "disease"


def _events(home: Path) -> list[dict]:
    path = home / "notifications.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_readme_drift_demo_ends_with_a_recovered_model_served(tmp_path: Path) -> None:
    """README, *Scheduling and drift* -> "To see it work on demo data", step by step."""
    home = new_home(tmp_path)
    seeded = cli(home, "seed-demo", "--drift", "sensor_recalibration", "--drift-days-ago", "14",
                 "--drift-magnitude", "2", "--hold-back-drift")
    assert seeded.returncode == 0, seeded.stderr
    drift_start = datetime.fromisoformat(json.loads((home / HELD_BACK).read_text())["drift_start"])
    env = {"RETRAINING_DRIFT_COOLDOWN_HOURS": "0", "RETRAINING_DRIFT_INTERVAL_SECONDS": "30"}
    with serving(home, env) as url:
        assert wait_for_run(url, launch_retrain(url, MODEL)) == "SUCCESS"  # "materialize the disease partition"
        released = cli(home, "seed-demo", "--release-drift")
        assert released.returncode == 0 and "Released" in released.stdout, released.stderr
        replay = cli(home, "replay-predictions", MODEL)
        assert replay.returncode == 0, replay.stderr
        verdict = json.loads(replay.stdout[replay.stdout.index("{"):])
        assert verdict["status"] == "drift" and verdict["model_version"] == "1.0.0"
        start_sensor(url, "drift_sensor")
        drift_run = wait_until(lambda: runs_tagged(url, "retraining/trigger", "drift"), 240, "a drift-triggered run")[0]
        assert wait_for_run(url, drift_run["runId"]) == "SUCCESS"
        retrained = wait_until(lambda: [e for e in _events(home) if e["type"] == "model_retrained"
                                   and e["trigger"] == "drift"], 60, "model_retrained")[0]
    types = [e["type"] for e in _events(home)]
    assert types.index("drift_detected") < len(types) - 1 - types[::-1].index("model_retrained")
    assert retrained["new_version"] == "1.1.0" and retrained["run_id"] == drift_run["runId"]
    registry = ModelRegistry(home / "model_registry")
    assert registry.get_active_version(MODEL) == "1.1.0"
    # served accuracy on post-drift data (the drift retrain's hold-out is entirely after the drift)
    recovered = retrained["new_accuracy"]
    assert recovered > verdict["current_accuracy"] + 0.3, "far better than the drifted model on the same world"
    # its recent window, where the hold-out lies, starts at the drift: every drifted day, not the job's whole window
    detected = next(e for e in _events(home) if e["type"] == "drift_detected")
    days = validation.time_range(detected["time_range"]) // DAY
    assert 14 <= days < validation.time_range(DRIFT_TIME_RANGE) // DAY, detected["time_range"]
    # and is as good as the world since the drift allows: 14 days of a dozen units' outcomes teach
    # less than v1.0.0's 72 days did, so the pre-drift level is not the yardstick (#8: "or the best
    # achievable"); within two standard errors of its hold-out of a retrain told when the drift began
    store = PlantDataStore(database_url=f"sqlite:///{home / 'plant_data.sqlite'}")
    best, rows = hindsight_accuracy(store, detected["time_range"], datetime.fromisoformat(detected["at"]), drift_start)
    margin = noise(best, rows)
    assert recovered > best - margin, f"v1.1.0 {recovered:.3f} vs {best:.3f} ± {margin:.3f} in hindsight"



def test_a_killed_retrain_frees_the_queue_through_the_daemon(tmp_path: Path) -> None:
    """SIGKILL the process of a daemon-launched retrain: run health marks it failed, the next one runs."""
    home = new_home(tmp_path)
    model = "climate_optimizer"  # the most rows: its run lives long enough to be killed mid-way
    assert cli(home, "seed-demo").returncode == 0
    with serving(home) as url:
        first = launch_retrain(url, model)
        pid = wait_until(lambda: _pid_tag(url, first), 120, "the run's first step", every=0.1)
        os.kill(int(pid), signal.SIGKILL)
        queued = launch_retrain(url, model)  # waits behind the one-run-per-model limit
        assert wait_for_run(url, first, timeout=240) == "FAILURE"
        assert wait_for_run(url, queued, timeout=300) == "SUCCESS"
    registry = ModelRegistry(home / "model_registry")
    assert registry.get_active_version(model) == "1.0.0" and registry.candidates() == []


TERMINATE = """mutation Terminate($runId: String!) { terminateRun(runId: $runId) { __typename
  ... on TerminateRunFailure { message } ... on PythonError { message } } }"""


def test_runs_are_forked_from_the_warm_process_and_the_ui_terminate_cancels_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committed instance forks each run from one warm process (launcher.py), each run its own process;
    the UI's Terminate (GraphQL terminateRun) ends a run CANCELED and leaves the registry as it was."""
    from .live import graphql

    home = new_home(tmp_path)
    model = "climate_optimizer"
    assert cli(home, "seed-demo").returncode == 0
    with serving(home) as url:
        runs = [launch_retrain(url, MODEL) for _ in range(2)]
        assert [wait_for_run(url, run_id) for run_id in runs] == ["SUCCESS", "SUCCESS"]
        pids = [int(_pid_tag(url, run_id)) for run_id in runs]
        assert pids[0] != pids[1], "one process per run"
        # the demo's whole 180 days, twice the default window: the run is still training when Terminate lands
        # (the default window's run once reached SUCCESS first on a machine busy with benchmarks)
        doomed = launch_retrain(url, model, samples_run_config("last_180d", get_spec(model).min_samples))
        wait_until(lambda: _status(url, doomed) == "STARTED", 120, "the run to start", every=0.1)
        pid = int(_pid_tag(url, doomed))
        parent = _stat(pid)[1]
        assert b"multiprocessing.forkserver" in Path(f"/proc/{parent}/cmdline").read_bytes(), "forked, not spawned"
        answer = graphql(url, TERMINATE, {"runId": doomed})["terminateRun"]
        assert answer["__typename"] == "TerminateRunSuccess", answer
        assert wait_for_run(url, doomed, timeout=120) == "CANCELED"
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30, "the cancelled run's process to exit", every=0.2)
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the committed dagster.yaml stores under $DAGSTER_HOME
    instance = dg.DagsterInstance.from_config(str(home))
    for run_id in [*runs, doomed]:
        messages = [event.message for event in instance.all_logs(run_id)]
        assert any("Forked run process" in m for m in messages), run_id
    for run_id in runs:  # each finished run's process says what memory it took at its peak
        peaks = [e.dagster_event.engine_event_data.metadata["peak_rss_mb"].value for e in instance.all_logs(run_id)
                 if e.dagster_event and e.dagster_event.is_engine_event
                 and "peak_rss_mb" in e.dagster_event.engine_event_data.metadata]
        assert len(peaks) == 1 and 50 < peaks[0] < 4096, (run_id, peaks)
    registry = ModelRegistry(home / "model_registry")
    assert registry.get_active_version(MODEL) == "1.1.0"
    assert registry.get_active_version(model) is None, "the cancelled first retrain never reached the gate"


def _status(url: str, run_id: str) -> str:
    from .live import RUN_STATUS, graphql

    return graphql(url, RUN_STATUS, {"runId": run_id})["runOrError"]["status"]


def _stat(pid: int) -> tuple[int, int]:
    """(pid, parent pid) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return pid, int(fields[1])


def _pid_tag(url: str, run_id: str) -> str | None:
    from .live import RUN_STATUS, graphql

    run = graphql(url, RUN_STATUS, {"runId": run_id})["runOrError"]
    return {t["key"]: t["value"] for t in run["tags"]}.get("retraining/pid")


@pytest.fixture(autouse=True)
def _no_project_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_WEBHOOK_URL", raising=False)


def _rest(method: str, url: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def _processes() -> list[tuple[int, int, int, str]]:
    """(pid, parent pid, process group, state) of every process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        found.append((int(stat.parent.name), int(fields[1]), int(fields[2]), fields[0]))
    return found


def _live_group_members(*pgids: int) -> list[int]:
    """Processes of these process groups that still run (zombies waiting for a reaper do not count)."""
    return [pid for pid, _, group, state in _processes() if group in pgids and state != "Z"]


def test_the_rest_api_queues_retrains_through_the_daemon_and_stops_with_the_service(tmp_path: Path) -> None:
    """README, *REST API*: retrain over HTTP, follow the run, see it in the UI; SIGTERM stops everything."""
    home = new_home(tmp_path)
    assert cli(home, "seed-demo", "--days", "90", "--units", "6").returncode == 0
    processes: list = []
    with serving(home, processes=processes) as url:
        api = f"{api_url(url)}/api/v1/ai"
        health = wait_until(lambda: _rest("GET", f"{api}/health")[1], 60, "the REST API")
        assert health["status"] == "ok", health
        status, queued = _rest("POST", f"{api}/retrain/{MODEL}?force=true&wait=false")
        assert status == 202 and queued["status_url"].endswith(queued["run_id"])
        status, busy = _rest("POST", f"{api}/retrain/{MODEL}?force=true&wait=false")
        assert status == 409 and busy["error"]["type"] == "retrain_in_progress"
        assert busy["error"]["run_id"] == queued["run_id"]
        report = wait_until(lambda: (r := _rest("GET", f"{api}/retraining/runs/{queued['run_id']}")[1])["outcome"]
                            and r, 300, "the queued retrain to finish")
        assert report["status"] == "SUCCESS" and report["outcome"] == "promoted", report
        assert report["result"]["new_version"] == "1.0.0" and report["trigger"] == "manual"
        assert queued["run_id"] in [r["runId"] for r in runs_tagged(url, PARTITION_TAG, MODEL)]
        status, result = _rest("POST", f"{api}/retrain/{MODEL}?force=true")  # wait=true: the spec's answer
        assert status == 200 and result["new_version"] == "1.1.0" and result["old_version"] == "1.0.0", result
        assert result["outcome"] in ("promoted", "rejected") and "improvement" in result
        history = _rest("GET", f"{api}/retraining/history?model_type={MODEL}")[1]["runs"]
        assert [r["run_id"] for r in history] == [result["run_id"], queued["run_id"]]
        serve = processes[0]
        groups = {serve.pid} | {group for _, parent, group, _ in _processes() if parent == serve.pid}
        assert len(groups) == 2, "dagster dev runs in a process group of its own"
        serve.send_signal(signal.SIGTERM)  # only the serve process, as `kill` or systemd would
        assert serve.wait(timeout=120) == 0
        wait_until(lambda: not _live_group_members(*groups), 60, "every process of the service to exit", every=1)
