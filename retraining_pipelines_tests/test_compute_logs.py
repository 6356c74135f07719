"""Run output for the UI without mirror processes (compute_logs.py), in real processes with real descriptors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from retraining_pipelines.compute_logs import EchoingComputeLogManager

from . import retrain_worker

ROOT = Path(__file__).resolve().parent.parent


def _home(home: Path, compute_logs: bool = True) -> Path:
    """The test's DAGSTER_HOME with the committed dagster.yaml (or without its `compute_logs`: Dagster's default)."""
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    if not compute_logs:
        config = yaml.safe_load((home / "dagster.yaml").read_text())
        del config["compute_logs"]
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def _worker(home: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "retraining_pipelines_tests.compute_log_worker", mode], cwd=ROOT,
                            env={**os.environ, "DAGSTER_HOME": str(home)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _captured(home: Path) -> tuple[str, str, bool]:
    """The last run's captured stdout and stderr as the UI reads them, and whether the capture completed."""
    with dg.DagsterInstance.from_config(str(home)) as instance:  # its dagster.yaml reads $DAGSTER_HOME: this home
        [run] = instance.get_runs(limit=1)
        [event] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.LOGS_CAPTURED)
        key = [run.run_id, "compute_logs", event.dagster_event.event_specific_data.file_key]
        manager = instance.compute_log_manager
        assert isinstance(manager, EchoingComputeLogManager)
        data = manager.get_log_data(key)
        return data.stdout.decode(), data.stderr.decode(), manager.is_capture_complete(key)


@pytest.mark.parametrize("mode", ["ok", "fail"])
def test_a_run_s_output_is_kept_for_the_ui_and_echoed_when_it_ends_with_no_process_started(
    isolated_dagster_home: Path, mode: str
) -> None:
    home = _home(isolated_dagster_home)
    done = _worker(home, mode)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    stdout, stderr, complete = _captured(home)
    assert "printed by Python" in stdout and "written to descriptor 1" in stdout  # C-level writes too
    assert "written to descriptor 2" in stderr
    assert complete
    assert "children during the run: []" in stdout  # no tail -F, no watcher
    # the terminal got it all, once, before anything the caller printed after the run
    assert out.count("printed by Python") == 1 and out.count("written to descriptor 1") == 1
    assert out.index("written to descriptor 1") < out.index("after the run")
    assert err.count("written to descriptor 2") == 1
    if mode == "fail":
        assert "the op failed on purpose" in stderr and "the op failed on purpose" in err


def test_dagster_s_default_starts_processes_to_mirror_a_run_which_ours_does_not(isolated_dagster_home: Path) -> None:
    """What compute_logs.py saves: the same run on Dagster's LocalComputeLogManager has child processes."""
    done = _worker(_home(isolated_dagster_home, compute_logs=False), "ok")
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    [line] = [line for line in out.splitlines() if line.startswith("children during the run")]
    assert line != "children during the run: []"


def test_a_run_killed_mid_way_keeps_its_output_and_leaves_no_process(isolated_dagster_home: Path) -> None:
    home = _home(isolated_dagster_home)
    worker = _worker(home, "hang")
    deadline = time.monotonic() + 120
    files = []
    while time.monotonic() < deadline and not any("written to descriptor 1" in f.read_text() for f in files):
        time.sleep(0.2)
        files = list((home / "storage").rglob("*.out"))
    assert files, worker.stderr.read() if worker.poll() is not None else "no output captured in 120 s"
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    # nothing holds the worker's stdout open (a mirroring tail would, until its watcher noticed)
    assert worker.stdout.read() == ""
    [captured] = files
    assert "printed by Python" in captured.read_text()
    assert not _processes_naming(str(captured))


def _processes_naming(text: str) -> list[int]:
    """Pids of live processes whose command line names `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_a_retrain_run_by_the_service_prints_its_verdict_not_every_event_and_stores_every_event(
    isolated_dagster_home: Path, plant_db_url: str
) -> None:
    """service.CONSOLE_LOGGING: the caller's terminal gets INFO and above; the UI still gets all ~67 events."""
    home = _home(isolated_dagster_home)
    worker = retrain_worker.start(home, plant_db_url, "disease", text=True)
    out, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["new_version"] == "1.0.0"
    assert "disease v1.0.0: promoted" in err
    assert "STEP_START" not in err and "ASSET_CHECK_EVALUATION" not in err
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs(limit=1)
        stored = {e.dagster_event.event_type for e in instance.all_logs(run.run_id) if e.dagster_event}
    assert {dg.DagsterEventType.STEP_START, dg.DagsterEventType.ASSET_CHECK_EVALUATION,
            dg.DagsterEventType.RUN_SUCCESS} <= stored
