"""A retrain in a process of its own, as the Python API runs it (for kill and race tests).

Usage: python -m retraining_pipelines_tests.retrain_worker MODEL_TYPE [TIME_RANGE]
Reads DAGSTER_HOME and PLANT_DATABASE_URL; prints the RetrainingResult as JSON. Tests start it with `start`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from retraining_pipelines import AutomatedRetrainingService

ROOT = Path(__file__).resolve().parent.parent


def start(home: Path, plant_db_url: str, model_type: str, *time_range: str, text: bool = False) -> subprocess.Popen:
    """This module in a process of its own, on DAGSTER_HOME `home` and that plant database (stdout, stderr piped)."""
    env = {**os.environ, "DAGSTER_HOME": str(home), "PLANT_DATABASE_URL": plant_db_url}
    command = [sys.executable, "-m", "retraining_pipelines_tests.retrain_worker", model_type, *time_range]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text)


def main() -> None:
    model_type = sys.argv[1]
    time_range = sys.argv[2] if len(sys.argv) > 2 else "last_90d"
    service = AutomatedRetrainingService()
    result = service.retrain_model(model_type, force=True, time_range=time_range)
    print(json.dumps(result.to_dict()))


if __name__ == "__main__":
    main()
