"""Bad plant data is a data-quality result, not a crash; damaged state fails with its cause named.

The plant app is someone else's code: it may write a label we do not know, a timestamp in
milliseconds, a unit it never registered, a crop we have no profile of. Each such row is counted
by reason and left out; beyond `MAX_REJECTED_SHARE` the blocking `usable_rows` check stops training.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from retraining_pipelines import AutomatedRetrainingService, ModelIntegrityError
from retraining_pipelines.assets import MAX_REJECTED_SHARE
from retraining_pipelines.catalog import get_spec
from retraining_pipelines.cli import main
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.errors import StorageError
from retraining_pipelines.io_manager import ModelRegistryResource
from retraining_pipelines.notifications import Notifier
from retraining_pipelines.runs import step_failure_reason

from .conftest import TEST_CONFIG, fresh_store
from .helpers import failure_messages, metadata_of, notify_failure, retrain

SMALL = dataclasses.replace(TEST_CONFIG, days=40, units=3)
DURIAN_UNIT = 50


@pytest.fixture
def store(tmp_path: Path) -> PlantDataStore:
    return fresh_store(tmp_path, SMALL)


def _rows(store: PlantDataStore, table: str, n: int, **changes: object) -> pd.DataFrame:
    """`n` recent rows of a label table, changed as given (ids left to the database)."""
    with store.engine.connect() as conn:
        frame = pd.read_sql(sa.text(f"SELECT * FROM {table} WHERE ts BETWEEN 946684800 AND 4102444800 "
                                    f"ORDER BY ts DESC LIMIT {n}"), conn)
    return frame.drop(columns=["id"]).assign(**changes)


def _insert(store: PlantDataStore, table: str, frame: pd.DataFrame) -> None:
    with store.engine.begin() as conn:
        frame.to_sql(table, conn, if_exists="append", index=False)


def _add_durian_unit(store: PlantDataStore, table: str, n: int) -> None:
    _insert(store, "grow_units", pd.DataFrame([{"unit_id": DURIAN_UNIT, "name": "exotic", "crop": "durian",
                                                 "environment": "greenhouse"}]))
    _insert(store, table, _rows(store, table, n, unit_id=DURIAN_UNIT))


def test_unusable_label_rows_are_counted_by_reason_and_never_trained_on(
    store: PlantDataStore, instance: dg.DagsterInstance
) -> None:
    table = get_spec("disease").label_table
    _insert(store, table, _rows(store, table, 3, disease_type="alien_blight"))
    _insert(store, table, _rows(store, table, 4, unit_id=999))
    ms = _rows(store, table, 2)
    _insert(store, table, ms.assign(ts=ms["ts"] * 1000))
    iso = _rows(store, table, 1)
    _insert(store, table, iso.assign(ts=pd.to_datetime(iso["ts"], unit="s").dt.strftime("%Y-%m-%dT%H:%M:%S")))
    _add_durian_unit(store, table, 5)

    result = retrain("disease", store, instance, {"time_range": "last_30d"})
    assert result.success, failure_messages(result)
    samples = metadata_of(result, "training_samples")
    assert samples["rejected_rows"] == {"unknown_unit": 4, "unknown_crop": 5, "unknown_class": 3, "bad_timestamp": 3}
    assert 0 < samples["rejected_share"] <= MAX_REJECTED_SHARE
    assert "alien_blight" not in samples["class_balance"]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["usable_rows"].passed
    model = ModelRegistryResource().get().load_model("disease", "1.0.0")
    assert set(model.classes_) <= set(get_spec("disease").classes)


@pytest.mark.parametrize("model_type", ["growth_stage", "climate_optimizer"])
def test_an_unknown_crop_is_left_out_not_a_crash_or_nan_features(
    model_type: str, store: PlantDataStore, instance: dg.DagsterInstance
) -> None:
    _add_durian_unit(store, get_spec(model_type).label_table, 4)
    result = retrain(model_type, store, instance, {"time_range": "last_30d"})
    assert result.success, failure_messages(result)
    assert metadata_of(result, "training_samples")["rejected_rows"]["unknown_crop"] == 4
    assert metadata_of(result, "engineered_features")["nan_share"] < 0.01


def test_out_of_range_regression_targets_are_left_out(store: PlantDataStore, instance: dg.DagsterInstance) -> None:
    table = get_spec("personalized_growth").label_table
    _insert(store, table, _rows(store, table, 3, growth_rate=-4.0))
    _insert(store, table, _rows(store, table, 2, growth_rate=900.0))
    result = retrain("personalized_growth", store, instance, {"time_range": "last_30d", "min_samples": 100})
    assert result.success, failure_messages(result)
    assert metadata_of(result, "training_samples")["rejected_rows"]["out_of_range"] == 5


def test_too_many_unusable_rows_block_training_and_nothing_is_registered(
    store: PlantDataStore, instance: dg.DagsterInstance
) -> None:
    table = get_spec("disease").label_table
    good = store.count_samples("disease", "last_30d")
    _insert(store, table, _rows(store, table, good // 4, disease_type="Healthy"))  # a renamed class
    result = retrain("disease", store, instance, {"time_range": "last_30d"})
    assert not result.success
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "usable_rows")
    assert not check.passed and check.metadata["rejected_rows"].value == {"unknown_class": good // 4}
    assert ModelRegistryResource().get().list_versions("disease") == []


def test_a_broken_plant_database_names_its_path_in_the_run_error_notification_and_api(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    garbage = tmp_path / "plant.sqlite"
    garbage.write_bytes(b"this is not a database, it is a grocery list " * 100)
    store = PlantDataStore(database_url=f"sqlite:///{garbage}")
    failed = retrain("disease", store, instance)
    assert not failed.success
    reason = step_failure_reason(failed.get_step_failure_events()[0])
    assert "Cannot use the plant database at" in reason and str(garbage) in reason
    assert "file is not a database" in reason and "Error occurred while executing" not in reason
    notify_failure(failed, instance, store)
    assert str(garbage) in Notifier().read_log()[-1]["error"]
    with pytest.raises(StorageError, match="file is not a database"):
        AutomatedRetrainingService(plant_store=store, instance=instance).retrain_model("disease", force=True)


def test_a_dagster_home_that_is_not_a_directory_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home-is-a-file"
    home.write_text("oops")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with pytest.raises(StorageError, match=re.escape(str(home))):
        AutomatedRetrainingService()
    assert main(["jobs", "list", "--webserver", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Cannot use the job store at") and str(home) in err and "\n" not in err
    assert home.read_text() == "oops"


def test_a_damaged_reference_or_metadata_file_is_refused_not_parsed(tmp_path: Path) -> None:
    from .test_bad_input import _metadata, _tiny_model

    registry = ModelRegistryResource(registry_dir=str(tmp_path / "registry")).get()
    record = registry.register_model("disease", _tiny_model(), _metadata(),
                                     reference=pd.DataFrame({"temperature": [20.0, 21.5, 23.0]}))
    assert registry.load_reference("disease", record.version)["temperature"].tolist() == [20.0, 21.5, 23.0]
    assert registry.verify("disease", record.version) == record
    reference = record.path.with_name("reference.csv")
    reference.write_bytes(b"\xff\xfe\x00garbage\x81")
    with pytest.raises(ModelIntegrityError, match=r"reference\.csv"):
        registry.load_reference("disease", record.version)
    with pytest.raises(ModelIntegrityError):
        registry.verify("disease", record.version)
    metadata = record.path.with_name("metadata.json")
    changed = {**json.loads(metadata.read_text()), "training_samples": 10**6}
    metadata.write_text(json.dumps(changed))
    with pytest.raises(ModelIntegrityError, match=r"metadata\.json"):
        registry.load_metadata("disease", record.version)


def test_a_full_disk_while_registering_names_the_registry_and_registers_nothing(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = tmp_path / "registry"
    done = subprocess.run([sys.executable, "-m", "retraining_pipelines_tests.full_disk_worker", str(root), "20000"],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent,
                          check=False)
    assert done.stdout.startswith("StorageError: Cannot use the model registry at"), done.stdout + done.stderr
    assert str(root) in done.stdout and "File too large" in done.stdout
    registry = ModelRegistryResource(registry_dir=str(root)).get()
    assert registry.list_versions() == [] and registry.audit_trail() == []
    assert not (root / "disease").exists() or not any((root / "disease").iterdir()), "no version directory"
    assert list((root / ".staging").iterdir()) == [], "the half-written version was cleaned up"
