"""Registers a model in a process whose files may not grow past a few KB: a full disk, for real.

RLIMIT_FSIZE makes every write beyond the limit fail with EFBIG (SIGXFSZ ignored), exactly where a
full disk fails with ENOSPC. Prints the error type and message, or "registered".
"""

from __future__ import annotations

import resource
import signal
import sys

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from retraining_pipelines import ModelMetadata, ModelRegistry, RetrainingError


def main() -> None:
    root, limit = sys.argv[1], int(sys.argv[2])
    registry = ModelRegistry(root)  # the index exists before the disk "fills"
    rng = np.random.default_rng(0)
    model = RandomForestClassifier(n_estimators=30, random_state=0).fit(rng.normal(size=(300, 4)),
                                                                         rng.integers(0, 3, 300))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    metadata = ModelMetadata(model_type="disease", feature_names=["a", "b", "c", "d"], training_samples=300,
                             training_duration=0.1, performance_metrics={"accuracy": 0.5})
    try:
        registry.register_model("disease", model, metadata)
    except RetrainingError as err:
        print(f"{type(err).__name__}: {err}")
        return
    print("registered")


if __name__ == "__main__":
    main()
