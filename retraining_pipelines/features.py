"""Feature engineering: from plant-app rows to the matrix each model type trains on.

All climate features come from one hourly frame per unit (complete hourly grid, trailing 24 h /
72 h windows, VPD, degree-days), joined to each label at the last *complete* hour before the
event, so no feature sees data from after the moment it describes. History features (a
grower's usual watering hour, a unit's growth so far) use only earlier rows. Everything is
vectorised: a year of readings for 20 units takes seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from retraining_pipelines.catalog import get_spec
from retraining_pipelines.crops import CROPS_BY_NAME, STAGE_INDEX, CropProfile, vpd_kpa
from retraining_pipelines.plantdb import DAY, HOUR, SENSORS, TrainingSamples

#: Degree-day base temperature (°C), the usual one for warm-season vegetables.
GDD_BASE_C = 10.0
LIGHT_ON_LUX = 1000.0


@dataclass
class FeatureSet:
    """A model type's training matrix, in time order (the hold-out split relies on that)."""

    model_type: str
    feature_set: str
    feature_names: list[str]
    X: pd.DataFrame
    y: pd.Series
    ts: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def engineer_features(samples: TrainingSamples, columns: Sequence[str] | None = None) -> FeatureSet:
    """Build the catalog's feature set for `samples.model_type`.

    `columns` asks for other inputs the builder computes: a version trained before the catalog's
    list changed predicts from its own until a retrain replaces it. Names the builder no longer
    computes are left out, for the caller to refuse by name.
    """
    spec = get_spec(samples.model_type)
    climate = hourly_features(samples.hourly)
    frame = _BUILDERS[spec.model_type](samples.labels.sort_values("ts", kind="stable"), climate, samples)
    frame = frame.reset_index(drop=True)
    names = [c for c in columns if c in frame.columns] if columns is not None else list(spec.features)
    return FeatureSet(
        model_type=spec.model_type,
        feature_set=spec.feature_set,
        feature_names=names,
        X=frame[names].astype(float),
        y=frame[spec.target],
        ts=frame["ts"].to_numpy(dtype=np.int64),
    )


def hourly_features(hourly: pd.DataFrame) -> pd.DataFrame:
    """Per-unit hourly grid with trailing aggregates; short gaps (<= 3 h) carried forward."""
    if hourly.empty:
        return pd.DataFrame(columns=["unit_id", "hour_ts", *SENSORS])
    units = np.sort(hourly["unit_id"].unique())
    hours = np.arange(hourly["hour_ts"].min(), hourly["hour_ts"].max() + HOUR, HOUR)
    grid = pd.MultiIndex.from_product([units, hours], names=["unit_id", "hour_ts"])
    h = hourly.set_index(["unit_id", "hour_ts"])[list(SENSORS)].reindex(grid)
    h[list(SENSORS)] = h.groupby(level="unit_id")[list(SENSORS)].ffill(limit=3)
    h["vpd"] = vpd_kpa(h["temperature"], h["humidity"])
    h["light_on"] = (h["light"] > LIGHT_ON_LUX).astype(float)
    h["degree_hours"] = (h["temperature"] - GDD_BASE_C).clip(lower=0).fillna(0) / 24
    by_unit = h.groupby(level="unit_id")
    windows = {
        "temperature_mean_24h": ("temperature", 24, "mean"),
        "humidity_mean_24h": ("humidity", 24, "mean"),
        "vpd_mean_24h": ("vpd", 24, "mean"),
        "light_hours_24h": ("light_on", 24, "sum"),
        "temperature_mean_72h": ("temperature", 72, "mean"),
        "humidity_mean_72h": ("humidity", 72, "mean"),
        "soil_moisture_mean_72h": ("soil_moisture", 72, "mean"),
        "humidity_var_72h": ("humidity", 72, "var"),
    }
    for name, (col, hours_back, how) in windows.items():
        rolled = by_unit[col].rolling(hours_back, min_periods=max(2, hours_back // 4))
        h[name] = getattr(rolled, how)().droplevel(0)
    h["thermal_time_cum"] = by_unit["degree_hours"].cumsum()
    return h.reset_index()


def _at(labels: pd.DataFrame, climate: pd.DataFrame, ts_col: str = "ts") -> pd.DataFrame:
    """Join the climate of the last complete hour before `ts_col` to every label row."""
    key = labels[ts_col].to_numpy() // HOUR * HOUR - HOUR
    joined = labels.assign(hour_ts=key).merge(climate, on=["unit_id", "hour_ts"], how="left")
    return joined.drop(columns="hour_ts")


def _crop(frame: pd.DataFrame, figure: Callable[[CropProfile], float]) -> pd.Series:
    """A crop figure per row, looked up from the row's `crop` name."""
    return frame["crop"].map({name: figure(p) for name, p in CROPS_BY_NAME.items()}).astype(float)


def _calendar(frame: pd.DataFrame, ts_col: str = "ts") -> pd.DataFrame:
    when = pd.to_datetime(frame[ts_col], unit="s", utc=True)
    hour = when.dt.hour + when.dt.minute / 60
    season = 2 * np.pi * when.dt.day_of_year / 365.25
    return frame.assign(
        hour=when.dt.hour,
        weekday=when.dt.day_of_week,
        is_weekend=(when.dt.day_of_week >= 5).astype(int),
        hour_sin=np.sin(2 * np.pi * hour / 24),
        hour_cos=np.cos(2 * np.pi * hour / 24),
        season_sin=np.sin(season),
        season_cos=np.cos(season),
    )


def _history_mean(frame: pd.DataFrame, by: list[str], col: str) -> pd.Series:
    """Mean of `col` over the group's *earlier* rows only (the row's own value excluded)."""
    return frame.groupby(by)[col].transform(lambda s: s.shift(1).expanding().mean())


def _climate_optimizer(labels: pd.DataFrame, climate: pd.DataFrame, _: TrainingSamples) -> pd.DataFrame:
    f = _calendar(_at(labels, climate))
    return f.assign(
        temperature_deviation=f["temperature"] - _crop(f, lambda p: p.temperature_mid),
        humidity_deviation=f["humidity"] - _crop(f, lambda p: p.humidity_mid),
        vpd_deviation=f["vpd"] - _crop(f, lambda p: p.vpd_mid),
        co2_deviation=f["co2"] - _crop(f, lambda p: p.co2[1]),
    )


def _disease(labels: pd.DataFrame, climate: pd.DataFrame, _: TrainingSamples) -> pd.DataFrame:
    f = _at(labels, climate)
    return f.assign(stage_index=f["growth_stage"].map(STAGE_INDEX))


def _irrigation(labels: pd.DataFrame, climate: pd.DataFrame, _: TrainingSamples) -> pd.DataFrame:
    """Shared by the three irrigation models: conditions at detection and the grower's history."""
    f = _calendar(_at(labels, climate))
    previous_start = f.groupby("unit_id")["started_at"].shift(1)
    at_start = _at(labels[["unit_id", "started_at"]], climate[["unit_id", "hour_ts", "soil_moisture"]],
                   ts_col="started_at")
    return f.assign(
        hours_since_last_irrigation=(f["ts"] - previous_start) / HOUR,
        crop_soil_min=_crop(f, lambda p: p.soil_moisture[0]),
        crop_soil_max=_crop(f, lambda p: p.soil_moisture[1]),
        soil_moisture_at_start=at_start["soil_moisture"].to_numpy(),
        mean_previous_duration=_history_mean(f, ["unit_id"], "duration_s"),
        unit_habit_hour=_history_mean(f, ["unit_id"], "preferred_hour"),
    )


def _irrigation_duration(labels: pd.DataFrame, climate: pd.DataFrame, s: TrainingSamples) -> pd.DataFrame:
    # duration is decided when watering starts, so soil moisture is read then, not at detection
    f = _irrigation(labels, climate, s)
    return f.assign(soil_moisture=f["soil_moisture_at_start"])


def _growth(labels: pd.DataFrame, climate: pd.DataFrame, samples: TrainingSamples) -> pd.DataFrame:
    """Shared by the growth models: age, a crop-normalised thermal clock, the plant's and the unit's history.

    `previous_growth_rate` is what the plant grew at its previous check: each stage grows at its own
    pace, so it tells a plant that is ahead of the calendar from one behind it, which age and thermal
    clocks cannot (stage lengths differ plant to plant).

    `temperature_distance` and `vpd_distance` are how far the last day was from the crop's optimum,
    either side: growth falls off both ways, so a cold autumn week sits among the distances warm
    spells already taught. Trees cannot extrapolate: on the raw temperature or the signed deviation,
    every day colder than the training window was scored as its coldest day (BENCHMARKS.md,
    "personalized_growth through the autumn").
    """
    f = _at(labels, climate)
    cycle = _crop(f, lambda p: p.cycle_days)
    thermal_days = _thermal_days(labels, climate, samples, f)
    expected_thermal, position = _calendar_stage(f, thermal_days)
    temperature_deviation = f["temperature_mean_24h"] - _crop(f, lambda p: p.temperature_mid)
    return f.assign(
        stage_index=f["growth_stage"].map(STAGE_INDEX),
        expected_stage_index=_calendar_stage(f, f["days_since_planting"])[0],
        age_share_of_cycle=f["days_since_planting"] / cycle,
        thermal_days=thermal_days,
        expected_stage_thermal=expected_thermal,
        stage_position=position,
        crop_cycle_days=cycle,
        temperature_deviation=temperature_deviation,  # still read by versions trained before the distances
        temperature_distance=temperature_deviation.abs(),
        vpd_distance=(f["vpd_mean_24h"] - _crop(f, lambda p: p.vpd_mid)).abs(),
        unit_growth_history=_history_mean(f, ["unit_id", "growth_stage"], "growth_rate"),
        previous_growth_rate=f.groupby("plant_id")["growth_rate"].shift(1),
    )


def _thermal_days(labels: pd.DataFrame, climate: pd.DataFrame, samples: TrainingSamples,
                  f: pd.DataFrame) -> pd.Series:
    """Days of development since planting, counted at the crop's optimal temperature.

    Degree-days since planting divided by the degree-days of one optimal day: warm spells advance
    the clock faster, cold ones slower - the way plants develop. Days before the first reading
    (plants older than the data) count as one optimal day each.
    """
    planted = labels[["plant_id"]].merge(samples.plants[["plant_id", "planted_at"]], on="plant_id", how="left")
    planted = planted.assign(unit_id=labels["unit_id"].to_numpy())
    at_planting = _at(planted, climate[["unit_id", "hour_ts", "thermal_time_cum"]], ts_col="planted_at")
    first = climate.groupby("unit_id")[["hour_ts", "thermal_time_cum"]].first()
    baseline = at_planting["thermal_time_cum"].fillna(f["unit_id"].map(first["thermal_time_cum"])).to_numpy()
    unobserved = np.clip((f["unit_id"].map(first["hour_ts"]).to_numpy() - planted["planted_at"].to_numpy()) / DAY,
                         0, None)
    optimal_day = (_crop(f, lambda p: p.temperature_mid) - GDD_BASE_C).clip(lower=1.0)
    return (f["thermal_time_cum"] - baseline) / optimal_day + np.nan_to_num(unobserved)


def _calendar_stage(frame: pd.DataFrame, days: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The stage a plant `days` into its life is in on the crop's reference calendar, and how far into it."""
    stage = pd.Series(np.nan, index=frame.index)
    position = pd.Series(np.nan, index=frame.index)
    for name, rows in frame.groupby("crop").groups.items():
        profile = CROPS_BY_NAME[name]
        ends = np.cumsum(profile.mean_stage_days)
        starts = ends - np.asarray(profile.mean_stage_days)
        age = days.loc[rows].to_numpy(dtype=float)
        idx = np.minimum(np.searchsorted(ends, age, side="right"), len(ends) - 1)
        canonical = np.array([STAGE_INDEX[s] for s, _, _ in profile.stages])
        stage.loc[rows] = canonical[idx]
        position.loc[rows] = (age - starts[idx]) / np.asarray(profile.mean_stage_days)[idx]
    return stage, position


_Builder = Callable[[pd.DataFrame, pd.DataFrame, TrainingSamples], pd.DataFrame]
_BUILDERS: dict[str, _Builder] = {
    "climate_optimizer": _climate_optimizer,
    "disease": _disease,
    "irrigation_threshold": _irrigation,
    "irrigation_duration": _irrigation_duration,
    "irrigation_timing": _irrigation,
    "growth_stage": _growth,
    "personalized_growth": _growth,
}
