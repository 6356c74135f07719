"""Shared fixtures: real generated plant data in a real SQLite file, real Dagster instances."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from benchmarks import LATE_AUTUMN
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.generator import GeneratorConfig, PlantData, generate
from retraining_pipelines.notifications import wait_for_deliveries
from retraining_pipelines_tests.servers import postgres_database

_IMPORT_HOME = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """`definitions.py` builds its schedules at import: point it at a throw-away home first."""
    import os
    import tempfile

    os.environ["DAGSTER_HOME"] = config.stash[_IMPORT_HOME] = tempfile.mkdtemp(prefix="retraining-tests-home-")


def pytest_unconfigure(config: pytest.Config) -> None:
    """The throw-away home goes with the session."""
    import shutil

    if _IMPORT_HOME in config.stash:
        shutil.rmtree(config.stash[_IMPORT_HOME], ignore_errors=True)


#: The files that spend longest waiting on real processes (daemons, Celery workers, a browser), longest
#: first. `scripts/test` hands out whole files in collection order (`--no-loadscope-reorder`): started
#: first, the other worker fills in around them; left to xdist's default (files with the most tests
#: first), the walkthroughs ran alone for their last five minutes.
LONGEST_FILES = ("test_walkthroughs.py", "test_scale_out.py", "test_graphql_docs.py", "test_ui.py",
                 "test_drift_benchmark.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, the rest in their usual order (the sort is stable)."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))

#: Small but realistic: 6 grow units x 90 days of 5-minute readings (~150k rows), ending at today's
#: UTC midnight (the pipeline's windows are relative to now) with the seasons of late autumn, whatever
#: today's month. Ending "now" made every minute another world: tests that held at 22:00 failed at
#: 00:30 (a lucky day in the drifted log, a champion that could not beat the naive rule). From
#: midnight, every run of a day - and its CI - sees the same world.
TEST_CONFIG = GeneratorConfig(end=datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0), days=90,
                              units=6, seed=11, season_of=LATE_AUTUMN + timedelta(hours=12))


@pytest.fixture(autouse=True)
def isolated_dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Nothing a test does may touch the developer's own dagster_home/ (or outlive the test)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for var in ("PLANT_DATABASE_URL", "MODEL_REGISTRY_DIR", "ENABLE_AUTOMATED_RETRAINING", "NOTIFY_WEBHOOK_URL",
                "RETRAINING_DATABASE_URL", "RETRAINING_CELERY_BROKER", "RETRAINING_CELERY_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    yield home
    wait_for_deliveries()  # webhook deliveries run on threads: let them finish inside their own test


@pytest.fixture(scope="session")
def plant_data() -> PlantData:
    return generate(TEST_CONFIG)


@pytest.fixture(scope="session")
def plant_db_url(tmp_path_factory: pytest.TempPathFactory, plant_data: PlantData) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('plantdb') / 'plant_data.sqlite'}"
    PlantDataStore(database_url=url).write_frames(plant_data.tables())
    return url


@pytest.fixture
def plant_store(plant_db_url: str) -> PlantDataStore:
    return PlantDataStore(database_url=plant_db_url)


@pytest.fixture
def database() -> Iterator[str]:
    """A PostgreSQL database of this test's own (skipped without a server, except under CI=true)."""
    with postgres_database() as url:
        yield url


#: The embedded default's storage and compute logs, read from the committed `dagster_home/dagster.yaml`:
#: the tests' instances store runs, events and run output the way a user's service does
#: (instance_storage.py, compute_logs.py).
_EMBEDDED = yaml.safe_load((Path(__file__).resolve().parent.parent / "dagster_home" / "dagster.yaml").read_text())
EMBEDDED_STORAGE = _EMBEDDED["storage"]
EMBEDDED_COMPUTE_LOGS = _EMBEDDED["compute_logs"]


@contextmanager
def project_instance(overrides: dict[str, Any] | None = None) -> Iterator[dg.DagsterInstance]:
    """`dg.instance_for_test` (a temporary DAGSTER_HOME) with the embedded default's storage and compute logs."""
    embedded = {"storage": EMBEDDED_STORAGE, "compute_logs": EMBEDDED_COMPUTE_LOGS}
    with dg.instance_for_test(overrides={**embedded, **(overrides or {})}) as inst:
        yield inst


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with project_instance() as inst:
        yield inst


def fresh_store(tmp_path: Path, config: GeneratorConfig, name: str = "plant.sqlite") -> PlantDataStore:
    """A store of its own for tests that need special data (spikes, drift, emptiness)."""
    store = PlantDataStore(database_url=f"sqlite:///{tmp_path / name}")
    store.write_frames(generate(config).tables())
    return store
