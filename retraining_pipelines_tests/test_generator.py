"""The synthetic plant generator: deterministic, realistic, and drift that really shifts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from retraining_pipelines.crops import CROPS_BY_NAME
from retraining_pipelines.errors import InvalidFieldError
from retraining_pipelines.generator import DriftScenario, PlantData, generate, shift_days
from retraining_pipelines.plantdb import PHYSICAL_RANGES

from .conftest import TEST_CONFIG

SMALL = dataclasses.replace(TEST_CONFIG, days=60, units=4)


def _with_drift(kind: str, at_day: float = 30) -> tuple[PlantData, PlantData, int]:
    drifted = dataclasses.replace(SMALL, drift=(DriftScenario(kind, shift_days(SMALL, at_day)),))
    start = int(shift_days(SMALL, at_day).timestamp())
    return generate(SMALL), generate(drifted), start


def test_same_seed_same_data_other_seed_other_data() -> None:
    first, second = generate(SMALL), generate(SMALL)
    for name, frame in first.tables().items():
        pd.testing.assert_frame_equal(frame, second.tables()[name], obj=name)
    other = generate(dataclasses.replace(SMALL, seed=SMALL.seed + 1))
    assert not other.sensor_readings["temperature"].equals(first.sensor_readings["temperature"])


def test_readings_follow_crop_ranges_with_realistic_faults(plant_data: PlantData) -> None:
    readings = plant_data.sensor_readings.merge(plant_data.grow_units, on="unit_id")
    lo, hi = PHYSICAL_RANGES["temperature"]
    valid = readings[readings["temperature"].between(lo, hi)]
    for crop_name, rows in valid.groupby("crop"):
        crop = CROPS_BY_NAME[crop_name]
        assert crop.temperature[0] - 4 <= rows["temperature"].median() <= crop.temperature[1] + 4
    spikes = 1 - len(valid) / len(readings)
    assert 0.0005 < spikes < 0.01, "a few out-of-range sensor spikes, as real sensors have"
    expected = TEST_CONFIG.units * TEST_CONFIG.days * 288
    assert 0.97 < len(readings) / expected < 0.999, "about 1 % of readings missing"
    day = (readings["ts"] % 86400) // 3600
    lights_on = valid[day.loc[valid.index].between(10, 16)]["temperature"].mean()
    night = valid[day.loc[valid.index] < 4]["temperature"].mean()
    assert lights_on > night + 1, "diurnal cycle"


def test_every_model_type_gets_labels_with_every_outcome(plant_data: PlantData) -> None:
    from retraining_pipelines.generator import CLIMATE_ACTIONS, DISEASE_TYPES

    assert set(plant_data.disease_observations["disease_type"]) == set(DISEASE_TYPES)
    assert set(plant_data.climate_actions["action"]) == set(CLIMATE_ACTIONS)
    events = plant_data.irrigation_events
    assert set(events["feedback"]) == {"ok", "too_early", "too_late"}
    assert events["optimal_threshold"].between(20, 80).all()
    assert (events["started_at"] >= events["ts"]).all()


def test_fungal_disease_follows_long_humid_spells(plant_data: PlantData) -> None:
    """The mechanism the disease model must learn is really in the data."""
    obs = plant_data.disease_observations
    readings = plant_data.sensor_readings
    humid = []
    for row in obs.sample(400, random_state=0).itertuples():
        window = readings[(readings["unit_id"] == row.unit_id) & readings["ts"].between(row.ts - 72 * 3600, row.ts)]
        humid.append((row.disease_type, window["humidity"].mean()))
    frame = pd.DataFrame(humid, columns=["disease", "humidity_72h"])
    means = frame.groupby("disease")["humidity_72h"].mean()
    assert means["fungal"] > means["healthy"] + 5


def test_heat_wave_is_a_covariate_shift_from_its_start_date() -> None:
    base, hot, start = _with_drift("heat_wave")
    b, h = base.sensor_readings, hot.sensor_readings
    settled = start - 3600  # readings interpolate hourly values, so the onset is half an hour soft
    pd.testing.assert_frame_equal(b[b["ts"] < settled], h[h["ts"] < settled])
    lo, hi = PHYSICAL_RANGES["temperature"]
    shift = h[(h["ts"] >= start) & h["temperature"].between(lo, hi)]["temperature"].mean() - b[
        (b["ts"] >= start) & b["temperature"].between(lo, hi)]["temperature"].mean()
    assert 5.0 < shift < 7.0


def test_an_early_season_is_colder_damper_and_darker() -> None:
    base, cold, start = _with_drift("season")
    b, c = base.sensor_readings, cold.sensor_readings
    lo, hi = PHYSICAL_RANGES["temperature"]
    after_b, after_c = b[(b["ts"] >= start) & b["temperature"].between(lo, hi)], c[
        (c["ts"] >= start) & c["temperature"].between(lo, hi)]
    assert 4.0 < after_b["temperature"].mean() - after_c["temperature"].mean() < 6.0
    assert after_c["humidity"].mean() > after_b["humidity"].mean() + 3
    greenhouse = cold.grow_units.loc[cold.grow_units["environment"] == "greenhouse", "unit_id"]
    lit = after_c["unit_id"].isin(greenhouse) & (after_c["light"] > 5000)
    lit_b = after_b["unit_id"].isin(greenhouse) & (after_b["light"] > 5000)
    assert after_c.loc[lit, "light"].mean() < 0.8 * after_b.loc[lit_b, "light"].mean()


def test_sensor_recalibration_moves_readings_not_outcomes() -> None:
    base, recal, start = _with_drift("sensor_recalibration")
    after_b = base.sensor_readings[base.sensor_readings["ts"] >= start]
    after_r = recal.sensor_readings[recal.sensor_readings["ts"] >= start]
    assert after_r["humidity"].mean() - after_b["humidity"].mean() > 7
    pd.testing.assert_frame_equal(base.disease_observations, recal.disease_observations)


def test_new_cultivar_is_a_concept_shift_in_growth() -> None:
    base, new, start = _with_drift("new_cultivar", at_day=10)
    g_base = base.growth_observations[base.growth_observations["ts"] >= start]
    g_new = new.growth_observations[new.growth_observations["ts"] >= start]
    assert g_new["growth_rate"].mean() < 0.85 * g_base["growth_rate"].mean()
    pd.testing.assert_frame_equal(base.sensor_readings, new.sensor_readings)


def test_user_habits_shift_preferred_watering_hours() -> None:
    base, changed, start = _with_drift("user_habits", at_day=20)

    def dawn_watering_hour(data: PlantData) -> float:
        """Weekday needs detected before 05:00 wait for the grower's morning routine."""
        e = data.irrigation_events[data.irrigation_events["ts"] >= start]
        when = pd.to_datetime(e["ts"], unit="s", utc=True)
        return float(e[(when.dt.hour < 5) & (when.dt.day_of_week < 5)]["preferred_hour"].mean())

    assert dawn_watering_hour(changed) > dawn_watering_hour(base) + 2
    e_base = base.irrigation_events[base.irrigation_events["ts"] >= start]
    e_new = changed.irrigation_events[changed.irrigation_events["ts"] >= start]
    assert e_new["duration_s"].mean() > 1.15 * e_base["duration_s"].mean()


def test_unknown_drift_kind_is_refused() -> None:
    with pytest.raises(InvalidFieldError, match="drift kind"):
        DriftScenario("locusts", shift_days(SMALL, 1))  # type: ignore[arg-type]


def test_vpd_formula_matches_reference_value() -> None:
    from retraining_pipelines.crops import vpd_kpa

    # 25 °C, 60 % RH: saturation 3.168 kPa, deficit 40 % of it
    assert np.isclose(vpd_kpa(25.0, 60.0), 1.267, atol=0.002)


def test_season_of_pins_the_simulated_season() -> None:
    from datetime import UTC, datetime

    def greenhouse_mean(season_of: datetime) -> float:
        data = generate(dataclasses.replace(SMALL, units=3, season_of=season_of))
        greenhouse = data.grow_units.loc[data.grow_units["environment"] == "greenhouse", "unit_id"]
        readings = data.sensor_readings[data.sensor_readings["unit_id"].isin(greenhouse)]
        lo, hi = PHYSICAL_RANGES["temperature"]
        return float(readings.loc[readings["temperature"].between(lo, hi), "temperature"].mean())

    summer = greenhouse_mean(datetime(2026, 8, 15, tzinfo=UTC))
    winter = greenhouse_mean(datetime(2026, 2, 1, tzinfo=UTC))
    assert summer > winter + 5, "a greenhouse is warmer in a simulated summer, whatever month it is now"


def test_every_generated_label_is_one_the_catalog_accepts(plant_data) -> None:
    """The catalog's label rules (classes, target ranges) describe real data: nothing generated is rejected."""
    from retraining_pipelines.catalog import CATALOG

    for spec in CATALOG.values():
        labels = getattr(plant_data, spec.label_table)[spec.target]
        assert spec.usable_target(labels).all(), (spec.model_type, labels[~spec.usable_target(labels)].head())
