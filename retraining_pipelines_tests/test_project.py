"""The project as a user gets it: the committed instance config and the `dagster` CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

ROOT = Path(__file__).resolve().parent.parent


def test_committed_instance_config_queues_two_runs_and_one_per_model_type(tmp_path: Path) -> None:
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 2
        assert queue.tag_concurrency_limits == [
            {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        ]
        assert isinstance(instance.run_storage, SqliteRunStorage)  # Dagster's SQLite files (its engine kept)
        assert Path(instance.root_directory) == tmp_path
    finally:
        instance.dispose()


def test_dagster_definitions_validate_passes(isolated_dagster_home: Path) -> None:
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=ROOT,
                          env={**os.environ, "DAGSTER_HOME": str(isolated_dagster_home)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "All code locations passed validation" in done.stderr + done.stdout
