"""A retrain in a process of its own, as the Python API runs it (for kill and race tests).

Usage: python -m retraining_pipelines_tests.retrain_worker MODEL_TYPE [TIME_RANGE]
Reads DAGSTER_HOME and PLANT_DATABASE_URL; prints the RetrainingResult as JSON.
"""

from __future__ import annotations

import json
import sys

from retraining_pipelines import AutomatedRetrainingService


def main() -> None:
    model_type = sys.argv[1]
    time_range = sys.argv[2] if len(sys.argv) > 2 else "last_90d"
    service = AutomatedRetrainingService()
    result = service.retrain_model(model_type, force=True, time_range=time_range)
    print(json.dumps(result.to_dict()))


if __name__ == "__main__":
    main()
