"""The plant data store: real SQLite, windowed queries, SQL aggregation, atomic writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from retraining_pipelines import validation
from retraining_pipelines.catalog import MODEL_TYPES, get_spec
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.errors import InsufficientSamplesError, InvalidFieldError
from retraining_pipelines.plantdb import HOUR, Window


@pytest.mark.parametrize(("text", "days"), [("last_90d", 90), ("last_180d", 180), ("last_1d", 1)])
def test_time_ranges(text: str, days: int) -> None:
    assert validation.time_range(text) == days * 86400


@pytest.mark.parametrize("bad", ["90d", "last_0d", "last_90", "last_-5d", "last_9999d", "LAST_90D", "", None, 90])
def test_bad_time_ranges_name_the_field_and_the_format(bad: object) -> None:
    with pytest.raises(InvalidFieldError) as err:
        validation.time_range(bad)  # type: ignore[arg-type]
    assert "time_range" in str(err.value) and "last_<N>d" in str(err.value)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_fetch_samples_returns_the_window_in_time_order(plant_store: PlantDataStore, model_type: str) -> None:
    labels = plant_store.fetch_samples(model_type, min_samples=1, time_range="last_30d")
    window = Window.last("last_30d")
    assert len(labels) > 0
    assert labels["ts"].between(window.start_ts - 5, window.end_ts).all()
    assert labels["ts"].is_monotonic_increasing
    assert {"unit_id", "crop", get_spec(model_type).target} <= set(labels.columns)
    assert len(labels) < len(plant_store.fetch_samples(model_type, min_samples=1, time_range="last_90d"))


def test_insufficient_samples_message_is_the_spec_one(plant_store: PlantDataStore) -> None:
    available = plant_store.count_samples("disease", "last_90d")
    with pytest.raises(InsufficientSamplesError) as err:
        plant_store.fetch_samples("disease", min_samples=available + 1)
    assert str(err.value) == f"Insufficient samples: {available} < {available + 1} for disease in last_90d"


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "100"])
def test_min_samples_must_be_a_positive_integer(plant_store: PlantDataStore, bad: object) -> None:
    with pytest.raises(InvalidFieldError, match="min_samples"):
        plant_store.fetch_samples("disease", min_samples=bad)  # type: ignore[arg-type]


def test_unknown_model_type_is_refused_before_any_query(plant_store: PlantDataStore) -> None:
    with pytest.raises(InvalidFieldError, match="model_type"):
        plant_store.fetch_samples("../../etc")


def _store_with_readings(tmp_path: Path, rows: list[dict]) -> PlantDataStore:
    store = PlantDataStore(database_url=f"sqlite:///{tmp_path / 'small.sqlite'}")
    store.write_frames({
        "grow_units": pd.DataFrame([{"unit_id": 1, "name": "U1", "crop": "Tomatoes", "environment": "indoor"}]),
        "sensor_readings": pd.DataFrame(rows),
    })
    return store


def test_hourly_aggregation_excludes_and_counts_sensor_faults(tmp_path: Path) -> None:
    t0 = 1_700_000_000 // HOUR * HOUR
    base = {"unit_id": 1, "humidity": 60.0, "soil_moisture": 50.0, "co2": 600.0, "light": 100.0}
    rows = [{**base, "ts": t0 + 300 * i, "temperature": 20.0 + i} for i in range(4)]
    rows.append({**base, "ts": t0 + 1500, "temperature": 85.0})  # a spike
    rows.append({**base, "ts": t0 + HOUR, "temperature": 30.0})
    hourly = _store_with_readings(tmp_path, rows).fetch_hourly_climate([1], t0, t0 + 2 * HOUR)
    assert hourly["hour_ts"].tolist() == [t0, t0 + HOUR]
    assert hourly["temperature"].tolist() == [21.5, 30.0]
    assert hourly["n_readings"].tolist() == [5, 1]
    assert hourly["n_out_of_range"].tolist() == [1, 0]


def test_write_is_all_or_nothing(tmp_path: Path) -> None:
    store = _store_with_readings(tmp_path, [{"unit_id": 1, "ts": 0, "temperature": 20.0}])
    broken = pd.DataFrame([{"unit_id": 1, "ts": 10, "action": "heat"}, {"unit_id": 1, "ts": 20, "action": None}])
    good = pd.DataFrame([{"unit_id": 1, "ts": 3600, "temperature": 21.0}])
    with pytest.raises(sa.exc.IntegrityError):
        store.write_frames({"sensor_readings": good, "climate_actions": broken})
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from sensor_readings")).scalar_one() == 1
        assert conn.execute(sa.text("select count(*) from climate_actions")).scalar_one() == 0


def test_queries_are_indexed(plant_store: PlantDataStore) -> None:
    inspector = sa.inspect(plant_store.engine)
    indexed = {tuple(ix["column_names"]) for ix in inspector.get_indexes("sensor_readings")}
    assert ("unit_id", "ts") in indexed and ("ts",) in indexed
    for table in ("climate_actions", "disease_observations", "irrigation_events", "growth_observations"):
        assert ("ts",) in {tuple(ix["column_names"]) for ix in inspector.get_indexes(table)}
    assert ("model_type", "ts") in {tuple(ix["column_names"]) for ix in inspector.get_indexes("predictions")}


def test_default_database_lives_under_dagster_home(isolated_dagster_home: Path) -> None:
    store = PlantDataStore()
    assert store.url == f"sqlite:///{isolated_dagster_home / 'plant_data.sqlite'}"
    assert store.is_empty()
    assert (isolated_dagster_home / "plant_data.sqlite").exists()


def test_an_empty_database_answers_with_zero_not_an_error(tmp_path: Path) -> None:
    """A fresh deployment (no plant data yet): schedules see 'insufficient samples', not a crash."""
    store = PlantDataStore(database_url=f"sqlite:///{tmp_path / 'new' / 'plant.sqlite'}")
    assert store.count_samples("disease") == 0
    with pytest.raises(InsufficientSamplesError, match="Insufficient samples: 0 < 50 for disease"):
        store.fetch_samples("disease")


def test_an_older_database_gets_the_newer_indexes_when_opened(tmp_path: Path) -> None:
    from retraining_pipelines import plantdb

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    store = PlantDataStore(database_url=url)
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_predictions_drift"))
    plantdb._engine.cache_clear()  # a new process opening the file
    with PlantDataStore(database_url=url).engine.connect() as conn:
        names = {r[0] for r in conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'index'"))}
    assert "ix_predictions_drift" in names


def test_reads_in_chunks_give_the_frame_a_single_read_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows become columns a chunk at a time; a column empty in one chunk still ends up float, not object."""
    from retraining_pipelines import plantdb

    n = 1050
    readings = pd.DataFrame({"unit_id": 1, "ts": range(1_000_000, 1_000_000 + n), "temperature": 21.5,
                             "humidity": [None] * 600 + [55.0] * (n - 600), "soil_moisture": 30.0, "co2": 800.0,
                             "light": 0.0})
    store = PlantDataStore(database_url=f"sqlite:///{tmp_path / 'p.sqlite'}")
    store.write_frames({"sensor_readings": readings})
    query = sa.select(plantdb.sensor_readings).order_by(plantdb.sensor_readings.c.ts)
    with store.engine.connect() as conn:
        whole = pd.read_sql(query, conn)
    monkeypatch.setattr(plantdb, "READ_CHUNK_ROWS", 200)  # six chunks, the first three without humidity
    chunked = store._read(query)
    pd.testing.assert_frame_equal(chunked, whole)
    assert chunked["humidity"].dtype == "float64" and chunked["humidity"].isna().sum() == 600
    hourly = store.fetch_hourly_climate([1], 1_000_000, 1_000_000 + n)
    assert hourly["n_readings"].sum() == n


def test_the_queries_a_bare_script_uses_never_import_dagster() -> None:
    """The benchmarks' baseline runs our SQL, features and training without Dagster; importing them must not
    drag Dagster in (the package root is lazy), or every ratio to the baseline would be flattered."""
    code = ("import sys, retraining_pipelines.plantdb, retraining_pipelines.features, retraining_pipelines.training, "
            "retraining_pipelines.drift, retraining_pipelines.catalog; "
            "assert 'dagster' not in sys.modules, 'dagster imported'; "
            "from retraining_pipelines import get_spec, PlantDatabase; assert 'dagster' not in sys.modules; "
            "from retraining_pipelines import AutomatedRetrainingService; assert 'dagster' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    import retraining_pipelines

    assert set(retraining_pipelines.__all__) == set(retraining_pipelines._PUBLIC), "every public name resolves lazily"
    assert all(getattr(retraining_pipelines, name) is not None for name in retraining_pipelines.__all__)
