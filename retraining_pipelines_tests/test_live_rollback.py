"""The spec's rollback rule judged on what a version served (`drift.compare_served`, `drift_policy`).

A real story: a temperature and humidity sensor reads +2 °C / +10 % for three weeks (a faulty
calibration), a drift retrain learns those readings, and then the sensor is repaired. The retrain
is now the worse model on every event, and the version it replaced is right again. Real generated
worlds, real pipeline runs and gate, a real registry and the drift sensor's own code.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.drift import compare_served, replay_predictions
from retraining_pipelines.drift_policy import DRIFT_COOLDOWN_ENV, SERVED_CHECKED, served_worse
from retraining_pipelines.generator import DriftScenario, generate
from retraining_pipelines.jobstore import JobStore, validate_job
from retraining_pipelines.notifications import Notifier
from retraining_pipelines.promotion import ROLLBACK_TOLERANCE_PCT, relative_improvement
from retraining_pipelines.registry import TRIGGER_TAG, ActiveVersionChanged, ModelRegistry

from .conftest import TEST_CONFIG, project_instance
from .helpers import drift_sensor_tick, metadata_of, pipeline_resources, retrain

MODEL = "climate_optimizer"
NOW = TEST_CONFIG.end
FAULT_START = NOW - timedelta(days=30)
REPAIRED = NOW - timedelta(days=10)  # the drift retrain learns as of this day; it serves the days after


@pytest.fixture(autouse=True)
def no_cooldown(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retrains below ran seconds ago by the clock (their data is as of earlier days)."""
    monkeypatch.setenv(DRIFT_COOLDOWN_ENV, "0")


@dataclasses.dataclass
class World:
    store: PlantDataStore
    resources: dict
    registry: ModelRegistry
    jobs: JobStore
    notifications: Path

    def sensor(self, instance: dg.DagsterInstance) -> dg.SensorResult:
        return drift_sensor_tick(self.jobs, self.resources, instance)


def _between(tables: dict[str, pd.DataFrame], start: datetime, end: datetime) -> dict[str, pd.DataFrame]:
    """The time-stamped rows of [start, end) (units and plants are written once, with the first part)."""
    lo, hi = int(start.timestamp()), int(end.timestamp())
    return {name: frame[(frame["ts"] >= lo) & (frame["ts"] < hi)] for name, frame in tables.items() if "ts" in frame}


def _world(tmp: Path, instance: dg.DagsterInstance, faulty: bool) -> World:
    """v1.0.0 learns the 60 days before FAULT_START; v1.1.0, a drift retrain, learns FAULT_START to
    REPAIRED (the faulty sensor's readings when `faulty`); v1.1.0 serves from REPAIRED on, with the
    sensor read right again."""
    config = dataclasses.replace(TEST_CONFIG, days=100)
    fault = dataclasses.replace(config, drift=(DriftScenario("sensor_recalibration", FAULT_START),))
    stable = generate(config).tables()
    during = generate(fault).tables() if faulty else stable
    store = PlantDataStore(database_url=f"sqlite:///{tmp / 'plant.sqlite'}")
    first, _ = generate(config).split(int(FAULT_START.timestamp()))
    store.write_frames(first)
    store.write_frames(_between(during, FAULT_START, REPAIRED))
    resources = {**pipeline_resources(store, registry_dir=str(tmp / "registry")),
                 "notifier": Notifier(log_path=str(tmp / "notifications.jsonl"))}
    assert retrain(MODEL, store, instance, {"time_range": "last_60d", "as_of": FAULT_START.isoformat()},
                   resources=resources).success
    second = retrain(MODEL, store, instance, {"time_range": "last_20d", "as_of": REPAIRED.isoformat()},
                     resources=resources, tags={TRIGGER_TAG: "drift"})
    assert metadata_of(second, "validation_metrics")["promoted"] is True  # it beat v1.0.0 on the faulty weeks
    store.write_frames(_between(stable, REPAIRED, NOW + timedelta(days=1)))
    registry = resources["model_registry"].get()
    replay_predictions(store, registry, MODEL, "last_10d", end=NOW)  # what v1.1.0 served since the repair
    jobs = JobStore(tmp / "jobs.sqlite")
    jobs.add(validate_job(MODEL, "on_drift", drift_threshold=0.15, min_samples=50, time_range="last_28d"))
    return World(store, resources, registry, jobs, tmp / "notifications.jsonl")


def test_a_retrain_that_serves_worse_than_the_version_it_replaced_is_rolled_back(tmp_path: Path) -> None:
    with project_instance() as instance:
        world = _world(tmp_path, instance, faulty=True)
        assert world.registry.get_active_version(MODEL) == "1.1.0"
        comparison = compare_served(world.store, world.registry, MODEL, NOW)
        assert comparison is not None
        assert (comparison.active_version, comparison.previous_version) == ("1.1.0", "1.0.0")
        improvement = relative_improvement(comparison.previous_accuracy, comparison.active_accuracy)
        assert improvement < -ROLLBACK_TOLERANCE_PCT and comparison.p_value < 0.01 and served_worse(comparison)

        result = world.sensor(instance)
        assert result.run_requests == []  # the version it replaced is known to be better: no retrain needed
        assert "live rollback: climate_optimizer v1.1.0 served" in result.skip_reason.skip_message
        assert world.registry.get_active_version(MODEL) == "1.0.0"
        entry = world.registry.audit_trail(MODEL)[-1]
        assert (entry.event, entry.from_version, entry.to_version, entry.trigger) == (
            "rolled_back", "1.1.0", "1.0.0", "drift")
        assert "live rollback" in entry.reason
        event = Notifier(log_path=str(world.notifications)).read_log()[-1]
        assert (event["type"], event["old_version"], event["new_version"], event["trigger"]) == (
            "model_rolled_back", "1.1.0", "1.0.0", "drift")
        shown = [e for e in result.asset_events if "live_rollback" in e.metadata]
        assert len(shown) == 1 and shown[0].partition == MODEL
        assert shown[0].metadata["served_accuracy"].value == pytest.approx(comparison.active_accuracy, abs=1e-4)

        # the restored version is not new: it is judged by the drift check from now on, never traded back
        assert compare_served(world.store, world.registry, MODEL, NOW) is None
        again = world.sensor(instance)
        assert world.registry.get_active_version(MODEL) == "1.0.0"
        assert "live rollback" not in (again.skip_reason.skip_message if again.skip_reason else "")


def test_a_retrain_that_serves_as_well_is_kept(tmp_path: Path) -> None:
    with project_instance() as instance:
        world = _world(tmp_path, instance, faulty=False)
        comparison = compare_served(world.store, world.registry, MODEL, NOW)
        assert comparison is not None and comparison.labelled >= 10
        assert not served_worse(comparison)
        result = world.sensor(instance)
        assert world.registry.get_active_version(MODEL) == "1.1.0"
        assert json.loads(result.cursor)[SERVED_CHECKED][MODEL].startswith("1.1.0@")  # compared once today
        assert all(entry.event != "rolled_back" for entry in world.registry.audit_trail(MODEL))


def test_a_replaced_version_whose_file_fails_its_checksum_is_never_restored(tmp_path: Path) -> None:
    """Checksums before every load: a corrupted v1.0.0 is neither replayed nor restored, and the tick
    still judges drift as usual."""
    with project_instance() as instance:
        world = _world(tmp_path, instance, faulty=True)
        path = world.registry.get_version(MODEL, "1.0.0").path
        path.write_bytes(path.read_bytes() + b"tampered")
        assert compare_served(world.store, world.registry, MODEL, NOW) is None
        result = world.sensor(instance)
        assert world.registry.get_active_version(MODEL) == "1.1.0"
        assert all(entry.event != "rolled_back" for entry in world.registry.audit_trail(MODEL))
        assert not [e for e in result.asset_events if "live_rollback" in e.metadata]
        assert any("drift_status" in e.metadata for e in result.asset_events)  # the drift check still ran


def test_an_automatic_rollback_never_undoes_a_promotion_that_came_in_between(tmp_path: Path) -> None:
    """The compare-and-swap: judged against v1.1.0, the rollback must not replace a newer champion."""
    with project_instance() as instance:
        world = _world(tmp_path, instance, faulty=True)
        assert retrain(MODEL, world.store, instance, {"time_range": "last_28d", "as_of": NOW.isoformat()},
                       resources=world.resources).success
        active = world.registry.get_active_version(MODEL)
        trail = world.registry.audit_trail(MODEL)
        with pytest.raises(ActiveVersionChanged):
            world.registry.rollback(MODEL, "1.0.0", reason="live rollback", trigger="drift", if_active_is="1.1.0")
        assert world.registry.get_active_version(MODEL) == active
        assert world.registry.audit_trail(MODEL) == trail
