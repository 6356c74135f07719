"""Run in a child process by test_scale_out: retrains and promotions of one model type, racing another process.

Everything comes from the environment, as on a second machine: DAGSTER_HOME (the PostgreSQL
instance), RETRAINING_DATABASE_URL (plant data, registry index) and MODEL_REGISTRY_DIR (the shared
artifact directory). Prints one JSON line: what this process registered and promoted.
"""

from __future__ import annotations

import json
import os
import sys
import time

import dagster as dg

from retraining_pipelines import AutomatedRetrainingService
from retraining_pipelines.registry import ActiveVersionChanged
from retraining_pipelines_tests.registry_workers import metadata, small_model

MODEL_TYPE = "disease"


def race(rounds: int, burst: int, seed: int, burst_at: float) -> dict[str, list[str]]:
    """A burst of registrations and promotions starting at `burst_at` (epoch s) in both processes, then
    per round one real retrain through the gate and a registration promoted straight away."""
    service = AutomatedRetrainingService(instance=dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]))
    registry = service.registry
    done: dict[str, list[str]] = {"retrained": [], "promoted": [], "registered": []}
    time.sleep(max(0.0, burst_at - time.time()))
    for i in range(burst):
        version = registry.register_model(MODEL_TYPE, small_model(seed + rounds + i), metadata()).version
        done["registered"].append(version)
        registry.promote(MODEL_TYPE, version, reason=f"burst from pid {os.getpid()}")
        done["promoted"].append(version)
    for i in range(rounds):
        result = service.retrain_model(MODEL_TYPE, force=True)
        done["retrained"].append(result.new_version)
        if result.promoted:
            done["promoted"].append(result.new_version)
        version = registry.register_model(MODEL_TYPE, small_model(seed + i), metadata()).version
        done["registered"].append(version)
        try:
            registry.promote(MODEL_TYPE, version, reason=f"race from pid {os.getpid()}",
                             if_active_is=(registry.get_active_version(MODEL_TYPE),))
            done["promoted"].append(version)
        except ActiveVersionChanged:  # the other process swapped first: the gate would judge again
            registry.reject(MODEL_TYPE, version, reason="lost the race; judged against a replaced version")
    return done


if __name__ == "__main__":
    rounds, burst, seed, burst_at = sys.argv[1:]
    print(json.dumps(race(int(rounds), int(burst), int(seed), float(burst_at))), flush=True)
