"""Real crop ranges that ground the synthetic plant generator and a few crop-aware features.

Figures copied from the SYSGrow grow-room app's `plants_info.json` (MIT License,
Copyright (c) 2024-2026 Sebastian Gomez): the temperature and humidity spans cover every growth
stage's conditions; stage durations are the reference min/max days.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retraining_pipelines.errors import InvalidFieldError

#: Canonical stage order; crops use a subsequence of it.
STAGES: tuple[str, ...] = (
    "germination",
    "seedling",
    "vegetative",
    "flowering",
    "fruit_development",
    "harvest",
)
STAGE_INDEX: dict[str, int] = {name: i for i, name in enumerate(STAGES)}


@dataclass(frozen=True)
class CropProfile:
    """The figures of one crop that the generator and the features need."""

    name: str
    temperature: tuple[float, float]
    humidity: tuple[float, float]
    soil_moisture: tuple[float, float]
    vpd: tuple[float, float]
    co2: tuple[float, float]
    watering_trigger: float
    watering_every_h: float
    water_ml: float
    stages: tuple[tuple[str, int, int], ...]

    @property
    def temperature_mid(self) -> float:
        return sum(self.temperature) / 2

    @property
    def humidity_mid(self) -> float:
        return sum(self.humidity) / 2

    @property
    def vpd_mid(self) -> float:
        return sum(self.vpd) / 2

    @property
    def mean_stage_days(self) -> tuple[float, ...]:
        return tuple((lo + hi) / 2 for _, lo, hi in self.stages)

    @property
    def cycle_days(self) -> float:
        return sum(self.mean_stage_days)


CROPS: tuple[CropProfile, ...] = (
    CropProfile("Leafy Greens", temperature=(18, 24), humidity=(50, 70), soil_moisture=(70, 85), vpd=(0.6, 1.0), co2=(400, 800), watering_trigger=75, watering_every_h=12, water_ml=100, stages=(("germination", 3, 7), ("seedling", 14, 21), ("vegetative", 28, 42), ("harvest", 42, 56))),  # noqa: E501
    CropProfile("Tomatoes", temperature=(22, 28), humidity=(40, 60), soil_moisture=(65, 80), vpd=(0.8, 1.2), co2=(600, 1200), watering_trigger=70, watering_every_h=24, water_ml=200, stages=(("germination", 5, 10), ("seedling", 21, 28), ("vegetative", 28, 42), ("flowering", 7, 14), ("fruit_development", 42, 56), ("harvest", 60, 85))),  # noqa: E501
    CropProfile("Peppers", temperature=(22, 28), humidity=(40, 60), soil_moisture=(55, 70), vpd=(0.8, 1.3), co2=(400, 1000), watering_trigger=62, watering_every_h=36, water_ml=150, stages=(("germination", 7, 14), ("seedling", 21, 28), ("vegetative", 28, 42), ("flowering", 14, 21), ("fruit_development", 56, 70), ("harvest", 70, 90))),  # noqa: E501
    CropProfile("Herbs", temperature=(18, 24), humidity=(50, 70), soil_moisture=(45, 65), vpd=(0.7, 1.1), co2=(350, 700), watering_trigger=55, watering_every_h=48, water_ml=75, stages=(("germination", 5, 14), ("seedling", 14, 21), ("vegetative", 28, 56), ("harvest", 28, 56))),  # noqa: E501
    CropProfile("Cucumbers", temperature=(24, 29), humidity=(40, 70), soil_moisture=(70, 85), vpd=(0.8, 1.2), co2=(600, 1200), watering_trigger=72, watering_every_h=24, water_ml=400, stages=(("germination", 3, 7), ("seedling", 14, 21), ("vegetative", 28, 42), ("flowering", 7, 14), ("fruit_development", 28, 42), ("harvest", 50, 70))),  # noqa: E501
    CropProfile("Strawberries", temperature=(18, 24), humidity=(40, 60), soil_moisture=(60, 75), vpd=(0.6, 1.0), co2=(400, 800), watering_trigger=65, watering_every_h=48, water_ml=200, stages=(("germination", 7, 14), ("vegetative", 28, 42), ("flowering", 14, 21), ("fruit_development", 28, 42), ("harvest", 70, 90))),  # noqa: E501
    CropProfile("Carrots", temperature=(18, 24), humidity=(40, 60), soil_moisture=(50, 70), vpd=(0.7, 1.1), co2=(350, 600), watering_trigger=60, watering_every_h=72, water_ml=150, stages=(("germination", 7, 14), ("seedling", 21, 28), ("vegetative", 42, 56), ("harvest", 70, 80))),  # noqa: E501
    CropProfile("Cannabis", temperature=(18, 28), humidity=(30, 90), soil_moisture=(55, 70), vpd=(0.8, 1.4), co2=(800, 1500), watering_trigger=60, watering_every_h=48, water_ml=500, stages=(("germination", 3, 7), ("seedling", 10, 14), ("vegetative", 21, 42), ("flowering", 42, 63), ("harvest", 7, 14))),  # noqa: E501
    CropProfile("Bell Peppers", temperature=(22, 28), humidity=(40, 60), soil_moisture=(60, 75), vpd=(0.8, 1.2), co2=(500, 1000), watering_trigger=65, watering_every_h=36, water_ml=250, stages=(("germination", 7, 14), ("seedling", 21, 28), ("vegetative", 28, 42), ("flowering", 14, 21), ("fruit_development", 56, 70), ("harvest", 70, 90))),  # noqa: E501
    CropProfile("Eggplant (Aubergine)", temperature=(22, 30), humidity=(50, 70), soil_moisture=(65, 80), vpd=(0.9, 1.3), co2=(500, 1000), watering_trigger=68, watering_every_h=36, water_ml=300, stages=(("germination", 7, 14), ("seedling", 21, 35), ("vegetative", 35, 50), ("flowering", 14, 21), ("fruit_development", 50, 80))),  # noqa: E501
    CropProfile("Lettuce", temperature=(15, 21), humidity=(60, 80), soil_moisture=(70, 85), vpd=(0.6, 1.0), co2=(400, 800), watering_trigger=75, watering_every_h=24, water_ml=150, stages=(("germination", 4, 10), ("seedling", 10, 14), ("vegetative", 14, 28), ("harvest", 28, 40))),  # noqa: E501
    CropProfile("Spinach", temperature=(10, 20), humidity=(60, 80), soil_moisture=(70, 85), vpd=(0.5, 0.9), co2=(350, 700), watering_trigger=72, watering_every_h=24, water_ml=180, stages=(("germination", 5, 10), ("seedling", 10, 14), ("vegetative", 14, 28), ("harvest", 28, 45))),  # noqa: E501
)
CROPS_BY_NAME: dict[str, CropProfile] = {c.name: c for c in CROPS}


def crop(name: str) -> CropProfile:
    """Look a crop up by the name the plant app stores in `plants.crop`."""
    try:
        return CROPS_BY_NAME[name]
    except KeyError:
        raise InvalidFieldError("crop", name, CROPS_BY_NAME) from None


def vpd_kpa(temperature_c, humidity_pct):
    """Vapour-pressure deficit (kPa): the Tetens saturation pressure times the dryness share.

    Plants and fungi respond to VPD rather than to humidity alone, which is why several models
    use it as a feature and the generator drives disease risk with it.
    """
    saturation = 0.6108 * np.exp(17.27 * temperature_c / (temperature_c + 237.3))
    return saturation * (1.0 - humidity_pct / 100.0)
