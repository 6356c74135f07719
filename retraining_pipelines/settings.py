"""Where the service keeps its state, resolved one way everywhere.

Everything lives under `DAGSTER_HOME` by default (the embedded, no-server setup a Raspberry Pi
wants). One setting scales it out: `RETRAINING_DATABASE_URL` (a PostgreSQL URL) puts the plant
data, the registry index and the job store in that database, and - unless DAGSTER_HOME says
otherwise - selects the `deploy/postgres-celery` instance (runs and events in the same database,
retrains on Celery workers). Each location can still be overridden on its own.
"""

from __future__ import annotations

import os
from pathlib import Path

from retraining_pipelines import validation

#: The project's own `dagster_home/`, used when DAGSTER_HOME is not set (e.g. in a plain shell).
PROJECT_DAGSTER_HOME = Path(__file__).resolve().parent.parent / "dagster_home"


#: The scaled-out instance (PostgreSQL storage, Celery run launcher), picked by the one setting.
SCALED_OUT_DAGSTER_HOME = PROJECT_DAGSTER_HOME.parent / "deploy" / "postgres-celery"
DATABASE_URL_ENV = "RETRAINING_DATABASE_URL"
CELERY_BROKER_ENV = "RETRAINING_CELERY_BROKER"
CELERY_BACKEND_ENV = "RETRAINING_CELERY_BACKEND"
#: Redis for both: one server to run. RabbitMQ works as the broker too (`amqp://guest:guest@host//`).
DEFAULT_CELERY_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_CELERY_BACKEND = "redis://127.0.0.1:6379/1"


def shared_database_url() -> str | None:
    """The database every machine of a scaled-out deployment shares, or None (embedded)."""
    url = os.environ.get(DATABASE_URL_ENV)
    return with_installed_driver(url) if url else None


def with_installed_driver(url: str) -> str:
    """`postgresql://` names psycopg 3 in SQLAlchemy 2.1; the driver installed (dagster-postgres's) is psycopg2."""
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg2://" + url.removeprefix(bare)
    return url


def dagster_home() -> Path:
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    return SCALED_OUT_DAGSTER_HOME if shared_database_url() else PROJECT_DAGSTER_HOME


def export_for_dagster() -> Path:
    """Dagster reads DAGSTER_HOME and `dagster.yaml`'s env vars itself: hand it what this module resolved."""
    home = dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    if shared_database_url():
        os.environ[DATABASE_URL_ENV] = shared_database_url()
    return home


RUNS_PER_MACHINE_ENV = "RETRAINING_RUNS_PER_MACHINE"


def runs_per_machine() -> int | None:
    """How many retrains may share this machine's cores, when the process knows better than the instance.

    `retraining worker --concurrency N` sets it for its pool processes; the embedded deployment
    leaves it unset and the instance's `max_concurrent_runs` (all on this machine) decides.
    """
    value = os.environ.get(RUNS_PER_MACHINE_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def plant_database_url() -> str:
    """SQLAlchemy URL of the plant data store: `PLANT_DATABASE_URL`, the shared database, else SQLite in home."""
    return (os.environ.get("PLANT_DATABASE_URL") or shared_database_url()
            or f"sqlite:///{dagster_home() / 'plant_data.sqlite'}")


def celery_broker() -> str:
    return os.environ.get(CELERY_BROKER_ENV) or DEFAULT_CELERY_BROKER


def celery_backend() -> str:
    """Where task states live; not `rpc://`, which only the process that sent a task can read."""
    return os.environ.get(CELERY_BACKEND_ENV) or DEFAULT_CELERY_BACKEND


def registry_dir() -> Path:
    """`MODEL_REGISTRY_DIR` (a path or a `file://` URL), else `<DAGSTER_HOME>/model_registry`."""
    configured = os.environ.get("MODEL_REGISTRY_DIR")
    # not Path(url): that would read "file:///mnt/x" as the relative path "file:/mnt/x"
    return validation.directory("MODEL_REGISTRY_DIR", configured) if configured else dagster_home() / "model_registry"


def automated_retraining_enabled() -> bool:
    """The spec's `ENABLE_AUTOMATED_RETRAINING` switch."""
    return os.environ.get("ENABLE_AUTOMATED_RETRAINING", "").strip().lower() in {"1", "true", "yes"}
