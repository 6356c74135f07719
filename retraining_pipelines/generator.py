"""Realistic synthetic plant data: what the plant app would have written, with known ground truth.

The climate is simulated per grow unit on a regular time grid (numpy, vectorised over time):
seasonal and diurnal cycles, lights, multi-day weather spells, per-unit offsets. Outcomes are
drawn from plausible mechanisms on the *true* climate (fungal disease after long humid, low-VPD
spells; growth paced by thermal time; growers with irrigation habits), while the stored readings
carry sensor noise, gaps and out-of-range spikes - so models learn from imperfect sensors, as in
a real grow room. Drift scenarios switch on from a date to prove drift-triggered retraining.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from retraining_pipelines import validation
from retraining_pipelines.catalog import CLIMATE_ACTIONS, DISEASE_TYPES
from retraining_pipelines.crops import CROPS, STAGE_INDEX, STAGES, CropProfile, vpd_kpa
from retraining_pipelines.errors import InvalidFieldError

DriftKind = Literal["heat_wave", "season", "sensor_recalibration", "new_cultivar", "user_habits"]
#: Which kind of shift each scenario produces: covariate shifts move the inputs, concept shifts
#: change the input -> outcome mechanism.
DRIFT_KINDS: dict[str, str] = {
    "heat_wave": "covariate",
    "season": "covariate",  # a cold, damp, darker season arrives early
    "sensor_recalibration": "covariate",
    "new_cultivar": "concept",
    "user_habits": "concept",
}
HOUR = 3600
DAY = 86400
#: Bounds of a generated world: two years, a hundred units, and at most this many unit-days in
#: total (a unit-day is ~288 readings; 20,000 of them is about 1 GB while generating).
MAX_DAYS = 730
MAX_UNITS = 100
MAX_UNIT_DAYS = 20_000
MAX_DRIFT_MAGNITUDE = 10.0
_STAGE_GROWTH_CM = {"germination": 0.1, "seedling": 0.4, "vegetative": 1.2, "flowering": 0.9,
                    "fruit_development": 0.6, "harvest": 0.3}


@dataclass(frozen=True)
class DriftScenario:
    """A shift that starts at `start` and stays on; `magnitude` scales its size."""

    kind: DriftKind
    start: datetime
    magnitude: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in DRIFT_KINDS:
            raise InvalidFieldError("drift kind", self.kind, DRIFT_KINDS)
        validation.aware_datetime("drift start", self.start)
        validation.number("drift_magnitude", self.magnitude, 0.0, MAX_DRIFT_MAGNITUDE, low_open=True)


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. Same config and seed, same data, byte for byte."""

    end: datetime
    days: int = 120
    units: int = 8
    plants_per_unit: int = 2
    seed: int = 7
    step_minutes: int = 5
    missing_share: float = 0.01
    spike_share: float = 0.002
    drift: tuple[DriftScenario, ...] = field(default_factory=tuple)
    #: Simulate the seasons as if `end` fell on this date (default: `end` itself). Pins the
    #: season, so the same scenario behaves the same whatever month it is generated in.
    season_of: datetime | None = None

    def __post_init__(self) -> None:
        """A world too big to hold in memory is refused before a byte is generated."""
        validation.aware_datetime("end", self.end)
        validation.whole("days", self.days, 1, MAX_DAYS)
        validation.whole("units", self.units, 1, MAX_UNITS)
        if self.days * self.units > MAX_UNIT_DAYS:
            raise InvalidFieldError("days x units", f"{self.days} x {self.units}",
                                    f"at most {MAX_UNIT_DAYS} unit-days (about 1 GB of readings)")
        validation.whole("plants_per_unit", self.plants_per_unit, 1, 20)
        validation.whole("seed", self.seed, 0, 2**32 - 1)
        validation.whole("step_minutes", self.step_minutes, 1, 60)
        validation.number("missing_share", self.missing_share, 0.0, 0.5)
        validation.number("spike_share", self.spike_share, 0.0, 0.5)

    @property
    def end_ts(self) -> int:
        return int(self.end.timestamp()) // HOUR * HOUR

    @property
    def start_ts(self) -> int:
        return self.end_ts - self.days * DAY


@dataclass
class PlantData:
    """One frame per plant-app table (see the README's schema)."""

    grow_units: pd.DataFrame
    plants: pd.DataFrame
    sensor_readings: pd.DataFrame
    climate_actions: pd.DataFrame
    disease_observations: pd.DataFrame
    irrigation_events: pd.DataFrame
    growth_observations: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        return dict(vars(self))

    def split(self, at_ts: int) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
        """The rows the plant app writes before `at_ts`, and those it writes after (units and plants up front).

        Lets a demo or a test train a model first and have the (drifted) rest of the world arrive later.
        """
        before, after = {}, {}
        for name, frame in self.tables().items():
            if "ts" not in frame:
                before[name], after[name] = frame, frame.iloc[0:0]
            else:
                before[name], after[name] = frame[frame["ts"] < at_ts], frame[frame["ts"] >= at_ts]
        return before, after


def demo_config(days: int = 180, units: int = 12, drift: DriftKind | None = None, drift_days_ago: float = 10,
                drift_magnitude: float = 1.0, end: datetime | None = None) -> GeneratorConfig:
    """The data the run command seeds on first start: half a year up to now (or `end`: each hour's
    world differs, so `benchmarks.drift_demo` replays many), optionally drifting."""
    end = end or datetime.now(UTC)
    config = GeneratorConfig(end=end, days=days, units=units)
    if drift is None:
        return config
    validation.number("drift_days_ago", drift_days_ago, 0.0, float(days),
                      allowed=f"a number of days from 0 to days ({days})")
    start = end - timedelta(days=drift_days_ago)
    return replace(config, drift=(DriftScenario(drift, start, drift_magnitude),))


def generate(config: GeneratorConfig) -> PlantData:
    """Simulate every unit and return the plant-app tables."""
    rng = np.random.default_rng(config.seed)
    crops = [CROPS[i] for i in rng.permutation(len(CROPS))]
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in PlantData.__dataclass_fields__}
    next_plant_id = 1
    for unit_id in range(1, config.units + 1):
        unit = _Unit(unit_id, crops[(unit_id - 1) % len(crops)], config, next_plant_id)
        for name, frame in unit.simulate().items():
            parts[name].append(frame)
        next_plant_id += len(unit.plants)
    return PlantData(**{k: pd.concat(v, ignore_index=True) for k, v in parts.items()})


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """Smooth noise with standard deviation `sd`; `phi` near 1 gives long spells."""
    white = rng.normal(0.0, sd * np.sqrt(1 - phi**2), n)
    return lfilter([1.0], [1.0, -phi], white)


def _rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over `window` samples (shorter at the start), via cumulative sums."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


@dataclass
class _Plant:
    plant_id: int
    planted_ts: int
    stage_days: np.ndarray  # nominal days per stage, drawn within the crop's range


class _Unit:
    """One grow unit: its crop, its climate, its grower, its plants."""

    def __init__(self, unit_id: int, crop: CropProfile, config: GeneratorConfig, first_plant_id: int) -> None:
        self.id = unit_id
        self.crop = crop
        self.cfg = config
        # one independent stream per component: a drift that changes, say, how often growers
        # water cannot reshuffle the random draws of sensors or diseases before it starts
        streams = ("unit", "climate", "water", "plants", "sensor", "labels")
        rng_of = {name: np.random.default_rng([config.seed, unit_id, i]) for i, name in enumerate(streams)}
        self.rng_climate, self.rng_water = rng_of["climate"], rng_of["water"]
        self.rng_plants, self.rng_sensor, self.rng_labels = rng_of["plants"], rng_of["sensor"], rng_of["labels"]
        rng = rng_of["unit"]
        self.greenhouse = bool(unit_id % 3 == 0)
        self.first_plant_id = first_plant_id
        self.plants: list[_Plant] = []
        self.hour_ts = np.arange(config.start_ts, config.end_ts, HOUR)
        self.habit_hour = 6 + unit_id % 3  # the grower's usual morning watering hour
        self.evening_hour = 17 + unit_id % 4
        self.threshold_bias = rng.normal(0.0, 4.0)
        self.growth_factor = rng.uniform(0.7, 1.3)  # this grower's setup, for personalisation

    # ----------------------------------------------------------------- drift switches
    def _drift(self, kind: str, ts: np.ndarray) -> np.ndarray:
        """Magnitude of scenario `kind` at each time (0 before it starts)."""
        out = np.zeros(len(ts))
        for d in self.cfg.drift:
            if d.kind == kind:
                out = np.where(ts >= int(d.start.timestamp()), d.magnitude, out)
        return out

    # ----------------------------------------------------------------- climate
    def _true_climate(self) -> pd.DataFrame:
        """Hourly true climate; the 5-minute readings are interpolated from it plus noise."""
        ts = self.hour_ts
        n = len(ts)
        when = pd.to_datetime(ts, unit="s", utc=True)
        hour = when.hour.to_numpy() + 0.5
        shift = int(self.cfg.season_of.timestamp()) - self.cfg.end_ts if self.cfg.season_of else 0
        day_of_year = pd.to_datetime(ts + shift, unit="s", utc=True).day_of_year.to_numpy()
        season = np.cos(2 * np.pi * (day_of_year - 196) / 365.25)
        photoperiod = 16.0
        if self.greenhouse:
            light_frac = np.clip(np.sin(np.pi * (hour - 6) / 12), 0, None) * (0.75 + 0.25 * season)
        else:
            light_frac = ((hour >= 6) & (hour < 6 + photoperiod)).astype(float)
        season_amp, diurnal_amp = (5.0, 6.0) if self.greenhouse else (1.5, 3.0)
        weather = _ar1(self.rng_climate, n, 0.97, 1.6)  # multi-day warm/cool spells
        temperature = (
            self.crop.temperature_mid
            + season_amp * season
            + diurnal_amp * (light_frac - 0.5)
            + self.rng_climate.normal(0, 1.0)
            + weather
            + 6.0 * self._drift("heat_wave", ts)
            - 5.0 * self._drift("season", ts)
        )
        humid_spell = _ar1(self.rng_climate, n, 0.985, 9.0)  # the long damp spells fungi love
        humidity = np.clip(
            self.crop.humidity_mid + 4.0
            + self.rng_climate.normal(0, 3.0)
            - 1.5 * (temperature - self.crop.temperature_mid)
            + humid_spell
            - 8.0 * self._drift("heat_wave", ts)
            + 8.0 * self._drift("season", ts),
            15.0,
            99.0,
        )
        co2_mid = sum(self.crop.co2) / 2
        co2 = (420 + 0.3 * (co2_mid - 420) if self.greenhouse else co2_mid) - 120 * light_frac
        co2 = np.clip(co2 + _ar1(self.rng_climate, n, 0.9, 60.0), 300.0, None)
        daylight = 45000 * (1 - 0.4 * np.clip(self._drift("season", ts), 0, 1))
        light = light_frac * (daylight if self.greenhouse else 25000)
        return pd.DataFrame(
            {"ts": ts, "temperature": temperature, "humidity": humidity, "co2": co2,
             "light": light, "hour": hour, "season": season}
        )

    # ----------------------------------------------------------------- simulate
    def simulate(self) -> dict[str, pd.DataFrame]:
        climate = self._true_climate()
        climate["vpd"] = vpd_kpa(climate["temperature"].to_numpy(), climate["humidity"].to_numpy())
        irrigation, soil_hourly = self._irrigation(climate)
        climate["soil_moisture"] = soil_hourly
        self._plant_cohort()
        stages = self._plant_stages(climate)
        return {
            "grow_units": pd.DataFrame(
                [{"unit_id": self.id, "name": f"Unit {self.id}", "crop": self.crop.name,
                  "environment": "greenhouse" if self.greenhouse else "indoor"}]
            ),
            "plants": self._plants_table(stages),
            "sensor_readings": self._readings(climate),
            "climate_actions": self._climate_actions(climate, stages),
            "disease_observations": self._disease(climate, stages),
            "irrigation_events": irrigation,
            "growth_observations": self._growth(climate, stages),
        }

    def _readings(self, climate: pd.DataFrame) -> pd.DataFrame:
        """5-minute sensor readings: interpolated truth + noise, gaps and spikes."""
        step = self.cfg.step_minutes * 60
        ts = np.arange(self.cfg.start_ts, self.cfg.end_ts, step)
        n = len(ts)
        rng = self.rng_sensor
        noise_sd = {"temperature": 0.3, "humidity": 1.5, "soil_moisture": 1.0, "co2": 20.0,
                    "light": 300.0}
        frame = {"unit_id": np.full(n, self.id, dtype=np.int64), "ts": ts}
        hour_ts = climate["ts"].to_numpy() + HOUR / 2
        for col, sd in noise_sd.items():
            values = np.interp(ts, hour_ts, climate[col].to_numpy()) + rng.normal(0, sd, n)
            frame[col] = values
        frame["temperature"] += 2.0 * self._drift("sensor_recalibration", ts)
        frame["humidity"] += 10.0 * self._drift("sensor_recalibration", ts)
        frame["humidity"] = np.clip(frame["humidity"], 0, 100)
        frame["soil_moisture"] = np.clip(frame["soil_moisture"], 0, 100)
        frame["light"] = np.clip(frame["light"], 0, None)
        out = pd.DataFrame(frame)
        spikes = rng.random(n) < self.cfg.spike_share
        out.loc[spikes, "temperature"] = rng.choice([-40.0, 85.0], spikes.sum())
        keep = rng.random(n) >= self.cfg.missing_share
        return out[keep].reset_index(drop=True)

    # ----------------------------------------------------------------- irrigation
    def _irrigation(self, climate: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """Sequential by nature (each watering sets the next dry-down), so a loop over events."""
        crop, rng = self.crop, self.rng_water
        hour_ts = climate["ts"].to_numpy()
        vpd = climate["vpd"].to_numpy()
        temp = climate["temperature"].to_numpy()
        target = crop.soil_moisture[1] - 1.0
        base_rate = (target - crop.watering_trigger) / crop.watering_every_h
        habits = self._drift("user_habits", hour_ts)
        rows = []
        t = float(self.cfg.start_ts)
        level = target
        water_ts, water_level, water_rate = [], [], []
        while True:
            i = min(int((t - hour_ts[0]) // HOUR), len(hour_ts) - 1)
            rate = max(base_rate * (1 + 0.6 * (vpd[i] - crop.vpd_mid)), 0.05)
            water_ts.append(t)
            water_level.append(level)
            water_rate.append(rate)
            # the app never triggers within 5 points of the target: that would be a few-second sip
            threshold = float(np.clip(crop.watering_trigger + rng.normal(0, 6), 20, min(80, target - 5)))
            detected = t + max(level - threshold, 0.5) / rate * HOUR
            if detected >= self.cfg.end_ts - HOUR:
                break
            j = int((detected - hour_ts[0]) // HOUR)
            row = self._watering(detected, threshold, temp[j], habits[j], rate, target)
            rows.append(row)
            t = row["started_at"]
            level = target + rng.normal(0, 1.0)
        k = np.searchsorted(np.array(water_ts), hour_ts, side="right") - 1
        soil = np.array(water_level)[k] - np.array(water_rate)[k] * (hour_ts - np.array(water_ts)[k]) / HOUR
        return pd.DataFrame(rows), np.clip(soil, 5.0, 100.0)

    def _watering(
        self, detected: float, threshold: float, temp: float, habit_shift: float, rate: float,
        target: float,
    ) -> dict:
        """One irrigation event: when the grower waters, for how long, and what they think."""
        crop, rng = self.crop, self.rng_water
        when = datetime.fromtimestamp(detected, UTC)
        h, weekend = when.hour, when.weekday() >= 5
        morning = self.habit_hour + round(3 * habit_shift)
        if temp > crop.temperature[1] + 1:
            preferred = h  # hot: water straight away
        elif weekend:
            preferred = max(h, morning + 3)
        elif h < morning:
            preferred = morning
        elif h < 15:
            preferred = self.evening_hour
        else:
            preferred = min(h + 1, 22)
        if rng.random() < 0.12:
            preferred = int(np.clip(preferred + rng.choice([-1, 1]), 0, 23))
        delay_h = (preferred - h) % 24
        started = detected + delay_h * HOUR
        moisture_at_start = max(threshold - rate * delay_h, 5.0)
        secs_per_pct = 3.0 + crop.water_ml / 100.0
        duration = (target - moisture_at_start) * secs_per_pct * (1 + 0.02 * (temp - crop.temperature_mid))
        duration *= 1 + 0.3 * habit_shift
        duration = max(duration + rng.normal(0, 4.0), 5.0)
        preference = crop.watering_trigger + self.threshold_bias + 0.5 * (temp - crop.temperature_mid)
        preference -= 8.0 * habit_shift
        gap = threshold - preference
        feedback = "too_early" if gap > 3 else "too_late" if gap < -3 else "ok"
        nudge = {"too_early": -5.0, "too_late": 5.0, "ok": 0.0}[feedback]
        return {
            "unit_id": self.id,
            "ts": int(detected),
            "started_at": int(started),
            "threshold_used": round(threshold, 2),
            "target_moisture": round(target, 2),
            "duration_s": round(duration, 1),
            "preferred_hour": int(preferred),
            "user_response": "delayed" if delay_h else "accepted",
            "feedback": feedback,
            "optimal_threshold": float(np.clip(threshold + nudge, 20, 80)),
        }

    # ----------------------------------------------------------------- plants
    def _plant_cohort(self) -> None:
        """Plants staggered through their cycle, replanted the day after harvest ends."""
        crop, rng = self.crop, self.rng_plants
        lows = np.array([lo for _, lo, _ in crop.stages], dtype=float)
        highs = np.array([hi for _, _, hi in crop.stages], dtype=float)
        pid = self.first_plant_id
        for _ in range(self.cfg.plants_per_unit):
            planted = self.cfg.start_ts - int(rng.uniform(0, crop.cycle_days) * DAY)
            while planted < self.cfg.end_ts:
                days = rng.uniform(lows, highs)
                self.plants.append(_Plant(pid, planted // DAY * DAY, days))
                pid += 1
                planted += int((days.sum() * 1.15 + 1) * DAY)

    def _plant_stages(self, climate: pd.DataFrame) -> pd.DataFrame:
        """Daily stage per plant: nominal days advanced by thermal time (warm is faster)."""
        daily = climate.assign(day=climate["ts"] // DAY * DAY).groupby("day")["temperature"].mean()
        days, t_day = daily.index.to_numpy(), daily.to_numpy()
        cultivar_slow = 1.0 + 0.35 * self._drift("new_cultivar", days)
        pace = np.clip(1 + 0.05 * (t_day - self.crop.temperature_mid), 0.6, 1.4) / cultivar_slow
        names = [s for s, _, _ in self.crop.stages]
        frames = []
        for plant in self.plants:
            alive = days >= plant.planted_ts
            if not alive.any():
                continue
            before_window = max(0.0, (days[0] - plant.planted_ts) / DAY)  # grown before the data starts
            progress = before_window + np.cumsum(pace[alive])  # thermal days since planting
            bounds = np.cumsum(plant.stage_days)
            idx = np.searchsorted(bounds, progress, side="right")
            living = idx < len(names)
            if not living.any():
                continue
            idx, d = idx[living], days[alive][living]
            stage = np.array(names)[idx]
            start_of_stage = pd.Series(d).groupby(idx).transform("min").to_numpy()
            frames.append(pd.DataFrame({
                "plant_id": plant.plant_id, "day": d, "growth_stage": stage,
                "stage_index": [STAGE_INDEX[s] for s in stage],
                "days_since_planting": (d - plant.planted_ts) // DAY,
                "days_in_stage": (d - start_of_stage) // DAY,
                "thermal_time": progress[living],
            }))
        return pd.concat(frames, ignore_index=True)

    def _plants_table(self, stages: pd.DataFrame) -> pd.DataFrame:
        last = stages.sort_values("day").groupby("plant_id").tail(1).set_index("plant_id")
        cultivar = "standard"
        return pd.DataFrame([
            {"plant_id": p.plant_id, "unit_id": self.id, "crop": self.crop.name,
             "cultivar": cultivar, "planted_at": p.planted_ts,
             "stage": last["growth_stage"].get(p.plant_id, STAGES[0])}
            for p in self.plants
        ])

    def _observation_times(self, stages: pd.DataFrame) -> pd.DataFrame:
        """One check per plant per day at a daytime hour, joined to that hour's true climate."""
        n = len(stages)
        ts = stages["day"].to_numpy() + self.rng_labels.integers(8, 19, n) * HOUR
        ts = np.minimum(ts, self.cfg.end_ts - HOUR)
        return stages.assign(ts=ts.astype(np.int64))

    def _climate_at(self, climate: pd.DataFrame, ts: np.ndarray, window_h: int) -> dict:
        """True climate at `ts` and its trailing `window_h`-hour means (mechanism inputs)."""
        i = np.clip((ts - self.cfg.start_ts) // HOUR, 0, len(climate) - 1)
        out = {c: climate[c].to_numpy()[i] for c in ("temperature", "humidity", "vpd", "soil_moisture", "co2", "light")}
        for c in ("temperature", "humidity", "vpd"):
            out[f"{c}_mean"] = _rolling_mean(climate[c].to_numpy(), window_h)[i]
        out["light_hours"] = _rolling_mean((climate["light"].to_numpy() > 0).astype(float), 24)[i] * 24
        return out

    def _disease(self, climate: pd.DataFrame, stages: pd.DataFrame) -> pd.DataFrame:
        obs = self._observation_times(stages)
        c = self._climate_at(climate, obs["ts"].to_numpy(), 72)
        crop, rng = self.crop, self.rng_labels
        susceptible = self._drift("new_cultivar", obs["ts"].to_numpy())
        scores = np.column_stack([
            np.full(len(obs), 1.0),                                          # healthy
            0.25 * (c["humidity_mean"] - 70 + 8 * susceptible) + 3.0 * (0.6 - c["vpd_mean"]),
            0.6 * (c["temperature_mean"] - crop.temperature[1] + 2) + 0.1 * (c["humidity_mean"] - 62),
            0.6 * (c["temperature_mean"] - crop.temperature[1] + 1) + 0.12 * (50 - c["humidity_mean"]),
            0.07 * (obs["days_in_stage"].to_numpy() - 35) * (obs["stage_index"].to_numpy() >= 2),
            0.9 * (np.abs(c["temperature"] - crop.temperature_mid) - 3.8)
            + 0.3 * (crop.soil_moisture[0] - 6 - c["soil_moisture"]),
        ])
        label = np.argmax(scores + rng.gumbel(0, 0.35, scores.shape), axis=1)
        return obs.assign(unit_id=self.id, disease_type=np.array(DISEASE_TYPES)[label])[
            ["unit_id", "plant_id", "ts", "growth_stage", "days_in_stage", "disease_type"]
        ]

    def _growth(self, climate: pd.DataFrame, stages: pd.DataFrame) -> pd.DataFrame:
        obs = self._observation_times(stages)
        c = self._climate_at(climate, obs["ts"].to_numpy(), 24)
        crop = self.crop
        base = obs["growth_stage"].map(_STAGE_GROWTH_CM).to_numpy()
        temp_fit = np.exp(-(((c["temperature_mean"] - crop.temperature_mid) / 6.0) ** 2))
        vpd_fit = 1 - 0.5 * np.clip(np.abs(c["vpd_mean"] - crop.vpd_mid) - 0.2, 0, 1)
        light_fit = 0.6 + 0.4 * np.clip(c["light_hours"] / 16, 0, 1.2)
        co2_fit = np.clip(c["co2"] / 800, 0.4, 2.0) ** 0.2
        cultivar = 1 - 0.3 * self._drift("new_cultivar", obs["ts"].to_numpy())
        rate = base * temp_fit * vpd_fit * light_fit * co2_fit * self.growth_factor * cultivar
        rate = np.clip(rate + self.rng_labels.normal(0, 0.05, len(obs)), 0, None)
        return obs.assign(unit_id=self.id, growth_rate=rate.round(4))[
            ["unit_id", "plant_id", "ts", "growth_stage", "days_since_planting", "days_in_stage",
             "growth_rate"]
        ]

    def _climate_actions(self, climate: pd.DataFrame, stages: pd.DataFrame) -> pd.DataFrame:
        """What the grower did about the climate, every 3 hours, from the true conditions."""
        crop, rng = self.crop, self.rng_labels
        ts = self.hour_ts[::3] + rng.integers(0, 3, len(self.hour_ts[::3])) * HOUR
        c = self._climate_at(climate, ts, 24)
        action = np.select(
            [
                c["temperature"] > crop.temperature[1] + 0.5,
                c["temperature"] < crop.temperature[0] - 0.5,
                (c["humidity"] > crop.humidity[1] + 3) | (c["vpd"] < crop.vpd[0] - 0.1),
                (c["humidity"] < crop.humidity[0] - 3) | (c["vpd"] > crop.vpd[1] + 0.2),
                c["co2"] > crop.co2[1],
            ],
            ["cool", "heat", "dehumidify", "humidify", "ventilate"],
            "none",
        )
        override = rng.random(len(ts)) < 0.08
        action = np.where(override, rng.choice(CLIMATE_ACTIONS, len(ts)), action)
        return pd.DataFrame({"unit_id": self.id, "ts": ts.astype(np.int64), "action": action})


def shift_days(config: GeneratorConfig, days: float) -> datetime:
    """The moment `days` after the generated window starts: handy for placing drift."""
    return datetime.fromtimestamp(config.start_ts, UTC) + timedelta(days=days)
