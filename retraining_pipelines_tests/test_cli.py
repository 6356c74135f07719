"""The `retraining` console script: demo seeding on first start only."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import sqlalchemy as sa

from retraining_pipelines.cli import main, seed_demo
from retraining_pipelines.datastore import PlantDataStore

from .conftest import TEST_CONFIG


def _count(store: PlantDataStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text("select count(*) from sensor_readings")).scalar_one()


def test_seed_demo_writes_once_then_leaves_existing_data_alone(isolated_dagster_home: Path) -> None:
    store = PlantDataStore()
    small = dataclasses.replace(TEST_CONFIG, days=3, units=2)
    assert seed_demo(store, small) is True
    first = _count(store)
    assert first > 0
    assert seed_demo(store, small) is False
    assert _count(store) == first
    assert (isolated_dagster_home / "plant_data.sqlite").exists()


def test_seed_demo_command(isolated_dagster_home: Path, capsys) -> None:
    assert main(["seed-demo", "--days", "2", "--units", "1"]) == 0
    assert "Seeded 1 grow units x 2 days" in capsys.readouterr().out
    assert main(["seed-demo", "--days", "2", "--units", "1"]) == 0
    assert "already has plant data" in capsys.readouterr().out
