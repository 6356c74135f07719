"""Functions run in child processes by the registry tests (importable, so `spawn` can find them)."""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
from sklearn.tree import DecisionTreeClassifier

from retraining_pipelines.registry import ModelMetadata, ModelRegistry


def small_model(seed: int = 0) -> DecisionTreeClassifier:
    """A real fitted model, small enough to register hundreds of times."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, 3))
    return DecisionTreeClassifier(max_depth=3, random_state=seed).fit(X, X[:, 0] > 0)


def metadata(model_type: str = "disease", accuracy: float = 0.8, **extra: object) -> ModelMetadata:
    return ModelMetadata(model_type=model_type, feature_names=["a", "b", "c"], training_samples=60,
                         training_duration=0.01, performance_metrics={"accuracy": accuracy}, **extra)


def register_many(root: str, count: int, seed: int) -> list[str]:
    """Register `count` versions and promote each right away, racing the other processes."""
    registry = ModelRegistry(root)
    versions = []
    for i in range(count):
        version = registry.register_model("disease", small_model(seed + i), metadata()).version
        registry.promote("disease", version, reason=f"process {os.getpid()}")
        versions.append(version)
    return versions


def roll_back_judged(root: str, attempts: int) -> int:
    """Live rollbacks racing promotions: restore the previous version of the version just read, only
    if it is still the active one (the drift policy's compare-and-swap). Returns how many went through."""
    from retraining_pipelines.registry import ActiveVersionChanged, RegistryError

    registry = ModelRegistry(root)
    done = 0
    for _ in range(attempts):
        judged = registry.get_active_version("disease")
        previous = registry.get_previous_version("disease", judged) if judged else None
        if previous is None:
            continue
        try:
            registry.rollback("disease", previous, reason=f"judged {judged}", trigger="drift", if_active_is=judged)
            done += 1
        except (ActiveVersionChanged, RegistryError):  # promoted in between, or the target went meanwhile
            continue
    return done


def register_and_crash(root: str, crash_point: str) -> None:
    """Register a version but SIGKILL this process at `crash_point` (fault injection)."""
    import retraining_pipelines.registry as reg

    def die(*_args: object, **_kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if crash_point == "while_staging":
        original = reg._write_synced

        def write_then_die(path, data):
            original(path, data[: len(data) // 2])  # half a file on disk, then the power goes
            die()

        reg._write_synced = write_then_die
    elif crash_point == "after_rename":
        reg._fsync_dir = die  # called right after the rename, before the index row is written
    ModelRegistry(root).register_model("disease", small_model(99), metadata())


if __name__ == "__main__":
    register_and_crash(sys.argv[1], sys.argv[2])
