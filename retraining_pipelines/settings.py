"""Where the service keeps its state, resolved one way everywhere.

Everything lives under `DAGSTER_HOME` by default (the embedded, no-server setup a Raspberry Pi
wants); each location can be overridden by an environment variable for larger deployments.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The project's own `dagster_home/`, used when DAGSTER_HOME is not set (e.g. in a plain shell).
PROJECT_DAGSTER_HOME = Path(__file__).resolve().parent.parent / "dagster_home"


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or PROJECT_DAGSTER_HOME)


def plant_database_url() -> str:
    """SQLAlchemy URL of the plant data store (`PLANT_DATABASE_URL`, else SQLite in home)."""
    return os.environ.get("PLANT_DATABASE_URL") or f"sqlite:///{dagster_home() / 'plant_data.sqlite'}"


def registry_dir() -> Path:
    """Model registry directory (`MODEL_REGISTRY_DIR`, else `<DAGSTER_HOME>/model_registry`)."""
    return Path(os.environ.get("MODEL_REGISTRY_DIR") or dagster_home() / "model_registry")


def automated_retraining_enabled() -> bool:
    """The spec's `ENABLE_AUTOMATED_RETRAINING` switch."""
    return os.environ.get("ENABLE_AUTOMATED_RETRAINING", "").strip().lower() in {"1", "true", "yes"}
