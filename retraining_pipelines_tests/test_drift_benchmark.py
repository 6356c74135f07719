"""The drift scenario benchmark, small and fast: the real service loop day by day on one model type."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.drift_scenarios import (
    DRIFT_DAY,
    DRIFT_DAYS,
    END,
    RECOVERED_POINTS,
    RECOVERY_DAYS,
    SIMULATED_DAYS,
    WEEK,
    WORLD_DAYS,
    Pair,
    combine,
    frozen_record,
    panel_world,
    report,
    run_world,
    save,
    served_rows,
    serving_at,
)
from benchmarks.drift_windows import WINDOWS, score_windows
from retraining_pipelines.crops import CROPS
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.generator import DriftScenario, GeneratorConfig, generate

MODEL = "disease"


#: Recovery at a hobby grower's 8 units is a measured rate (BENCHMARKS.md: 19 of 31 pairs), decided in a
#: single world by a few dozen hold-out rows: here at 8 units the follow-up retrain lost the gate by 2
#: of 49 rows once drift retrains learned their hold-out (before, it won and served 0.84). At 20 units
#: the gate has rows enough that the mechanism, not a coin, decides (both codes recover: 0.84 / 0.85).
DRIFTED_UNITS = 20


@pytest.fixture(scope="module")
def drifted():
    return run_world("sensor_recalibration", seed=1, units=DRIFTED_UNITS, models=(MODEL,))[0]


def test_a_drift_that_hurts_is_flagged_within_days_and_a_retrain_is_served(drifted) -> None:
    summary = drifted.summary()
    assert summary["degraded"], summary  # the frozen model lost >= 15 %, significantly
    assert summary["delay"] is not None and summary["delay"] <= 7, summary
    assert drifted.promoted[0] == 0 and len(drifted.promoted) >= 2, "a drift retrain was served"
    assert summary["last"] > summary["worst"] + 0.1, summary
    assert summary["oracle"] is not None and summary["recovered"], summary  # back within 3 points


def test_the_served_versions_are_also_judged_on_the_twin_panel(drifted) -> None:
    """The panel scores what was served on many more labels than the units' own; the yardstick the
    recovery target is judged by when a dozen labels a day cannot tell 3 points from noise."""
    summary = drifted.summary()
    assert set(drifted.panel) == set(drifted.daily) and set(drifted.panel_frozen) == set(drifted.frozen)
    assert sum(n for _, n in drifted.panel.values()) > sum(n for _, n in drifted.daily.values())
    assert summary["panel_degraded"], summary  # the recalibrated sensor costs the twins what it cost the units
    assert summary["panel_after"] > summary["panel_worst"] + 0.1, summary  # the drift retrain serves there too
    assert drifted.panel_oracle is not None and summary["panel_recovered"] is not None
    both = (summary["recovered"], summary["panel_recovered"])
    slots = [(True, True), (False, False), (True, False), (False, True)]
    counts = ", ".join(str(int(both == slot)) for slot in slots)
    line = next(x for x in report([drifted], DRIFTED_UNITS, 1, 1.0).splitlines() if "by both yardsticks" in x)
    assert [int(n) for n in line.replace(",", " ").split() if n.isdigit()] == [int(n) for n in counts.split(", ")]


def test_the_panel_is_twin_units_the_service_never_saw() -> None:
    """The same seed's world on other units, with the world's crops only: at 8 units, 4 twins each
    (ids a crop cycle apart share crop, greenhouse and grower's hours) - never one of the service's units."""
    config = GeneratorConfig(end=END, days=10, units=8, seed=3)
    world, panel = generate(config).tables(), panel_world(config, 32)
    assert set(panel["grow_units"].unit_id).isdisjoint(world["grow_units"].unit_id)
    assert len(panel["grow_units"]) == 32
    crops = world["grow_units"].set_index("unit_id")
    for row in panel["grow_units"].itertuples():
        twin = crops.loc[(row.unit_id - 1) % len(CROPS) + 1]
        assert (row.crop, row.environment) == (twin.crop, twin.environment), row
    assert panel["grow_units"].crop.value_counts().eq(4).all()
    assert all(set(frame.unit_id) <= set(panel["grow_units"].unit_id) for frame in panel.values())
    assert not panel["sensor_readings"].empty and not panel["irrigation_events"].empty


def test_each_event_is_scored_by_the_version_that_served_at_its_time() -> None:
    """A version serves from its promotion (or rollback) until the next takes over; a restored version
    serves again - as the app logged it."""
    ts = list(range(0, 100, 10))
    predicted = {v: pd.DataFrame({"ts": ts, "prediction": v, "actual": "a"}) for v in ("v1", "v2")}
    rows = served_rows(predicted, [(0, "v1"), (35, "v2"), (70, "v1")])
    assert rows.ts.tolist() == ts
    assert rows.prediction.tolist() == ["v1"] * 4 + ["v2"] * 3 + ["v1"] * 3


def test_the_frozen_model_is_the_version_serving_when_the_drift_starts() -> None:
    """A version the service replaced before the drift (it served badly already) never met the drift:
    a pair is judged by its replacement, from the drift's start, against what was served before it."""
    first, start = (int((END - timedelta(days=days)).timestamp()) for days in (SIMULATED_DAYS, DRIFT_DAYS))
    history = [(first, "v1"), (start - 86_400, "v2"), (start + 86_400, "v3")]
    assert serving_at(history, 0) == "v1" and serving_at(history, DRIFT_DAY) == "v2"
    assert serving_at([(first, "v1"), (start, "v2")], DRIFT_DAY) == "v2", "promoted on the drift's eve"
    served = {day: (6, 10) for day in range(1, SIMULATED_DAYS + 1)}
    v2 = {day: (10 if day <= DRIFT_DAY else 8, 10) for day in served}  # perfect where it learned: never used
    frozen = frozen_record(served, v2)
    assert frozen == {day: (6, 10) if day <= DRIFT_DAY else (8, 10) for day in served}
    pair = Pair("season", 1, MODEL, daily=served, frozen=frozen, oracle=0.9)
    assert pair.summary()["pre"] == 0.6 and not pair.summary()["dropped"], "it served better than before"
    assert replace(pair, frozen=v2).summary()["dropped"], "its own record before the drift would invent a loss"


def test_a_stable_world_raises_no_alarm() -> None:
    stable = run_world("stable", seed=1, units=8, models=(MODEL,))[0]
    assert stable.flags == [] and len(stable.daily) >= SIMULATED_DAYS - 1
    assert "| stable | disease | 0/1 |" in report([stable], units=8, seeds=1, seconds=1.0)


def test_runs_made_side_by_side_combine_into_the_table_one_run_makes(drifted, tmp_path: Path) -> None:
    """Every pair's delay pools into the median: two saved runs report as one run of both would."""
    other = replace(drifted, seed=2, flags=[f + 3 for f in drifted.flags])  # as if another seed flagged later
    save(tmp_path / "a.json", DRIFTED_UNITS, 60.0, [drifted])
    save(tmp_path / "b.json", DRIFTED_UNITS, 30.0, [other])
    units, seconds, pairs = combine([tmp_path / "a.json", tmp_path / "b.json"])
    assert (units, seconds) == (DRIFTED_UNITS, 90.0)
    assert pairs == [drifted, other] and [p.summary() for p in pairs] == [drifted.summary(), other.summary()]

    def table(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("Generated")]

    combined = table(report(pairs, units, 2, seconds))
    assert combined == table(report([drifted, other], DRIFTED_UNITS, 2, 90.0))
    delay = drifted.summary()["delay"]
    assert f"| {MODEL} | 2/2 | 2/2 | {delay + 1.5} |" in "\n".join(combined), "the two delays pooled"
    save(tmp_path / "c.json", 8, 1.0, [drifted])
    with pytest.raises(SystemExit, match="different scales"):
        combine([tmp_path / "a.json", tmp_path / "c.json"])
    save(tmp_path / "a.json", DRIFTED_UNITS, 120.0, [drifted, other])  # a run saves after every world
    assert combine([tmp_path / "a.json"]) == (DRIFTED_UNITS, 120.0, [drifted, other])
    assert not list(tmp_path.glob("*.partial")), "replaced whole"


def test_a_retrain_after_a_drift_that_did_not_hurt_is_counted_apart() -> None:
    """Neither a flag of a degraded pair nor a stable world's false retrain, yet the table says it happened."""
    steady = {day: (8, 10) for day in range(1, SIMULATED_DAYS + 1)}
    calm = Pair("heat_wave", 1, MODEL, daily=steady, frozen=steady, oracle=0.8)
    calm.flags = [calm.drift_day + 3]
    hurt = Pair("heat_wave", 2, MODEL, daily=steady, oracle=0.8, flags=[calm.drift_day + 3],
                frozen={day: (8 if day <= calm.drift_day else 3, 10) for day in steady})
    assert (calm.summary()["degraded"], calm.summary()["undegraded_flags"]) == (False, 1)
    assert (hurt.summary()["degraded"], hurt.summary()["undegraded_flags"]) == (True, 0)
    table = report([calm, hurt], units=8, seeds=2, seconds=1.0)
    assert "- drifted worlds: 1 drift retrains after the drift's start on the 1 pairs it did not degrade" in table
    assert f"| heat_wave | {MODEL} | 1/2 | 1/1 | 3 |" in table


def test_a_drift_that_builds_up_is_also_timed_from_the_damage() -> None:
    """A heat wave can cost a model nothing for a week: the delay from the damage is the other yardstick."""
    steady = {day: (8, 10) for day in range(1, SIMULATED_DAYS + 1)}
    probe = Pair("heat_wave", 1, MODEL)
    later = probe.drift_day + 8  # the first day the frozen model is wrong more often
    slow = Pair("heat_wave", 1, MODEL, daily=steady, oracle=0.8, flags=[later + 2],
                frozen={day: (8 if day < later else 3, 10) for day in steady})
    summary = slow.summary()
    assert summary["degraded"] and (summary["delay"], summary["damage_delay"]) == (10, 2), summary
    passing = replace(slow, frozen={day: (3 if later <= day < later + WEEK else 8, 10) for day in steady})
    assert passing.summary()["damage_delay"] == 2, "a wave that passes: the drop, not the whole record, dates it"
    early = replace(slow, flags=[probe.drift_day + 1])  # flagged before the damage showed: 0, never negative
    assert (early.summary()["delay"], early.summary()["damage_delay"]) == (1, 0)
    table = report([slow, early], units=8, seeds=2, seconds=1.0)
    assert f"| heat_wave | {MODEL} | 2/2 | 2/2 | 5.5 | 1.0 |" in table
    assert "the damage, not the scenario's start): median 1.0, worst 2" in table


def test_a_loss_is_dated_by_the_first_day_the_frozen_model_had_lost_15_percent() -> None:
    """A drift that builds up loses its 15 % days after it starts; a sudden one on its first day."""
    steady = {day: (8, 10) for day in range(1, SIMULATED_DAYS + 1)}
    probe = Pair("heat_wave", 1, MODEL)
    later = probe.drift_day + 8
    slow = Pair("heat_wave", 1, MODEL, daily=steady, oracle=0.8, flags=[later + 3],
                frozen={day: (8 if day < later else 3, 10) for day in steady})
    # day `later`: 51 of 70 over its last 7 days (9 % below 56 of 70); a day on, 46 of 70: 18 %, p = 0.043
    assert slow.loss_day() == later + 1
    assert slow.summary()["loss_delay"] == 2
    assert replace(slow, flags=[later]).summary()["loss_delay"] == 0, "flagged before the loss: 0, never negative"
    sudden = replace(slow, frozen={day: (8 if day <= probe.drift_day else 3, 10) for day in steady})
    assert sudden.loss_day() == probe.drift_day + 1
    assert replace(slow, frozen=steady).loss_day() is None
    table = report([slow, replace(sudden, seed=2)], units=8, seeds=2, seconds=1.0)
    assert f"| heat_wave | {MODEL} | 2/2 | 2/2 | 11.0 | 6.5 | 6.0 |" in table  # delays: start, damage, loss
    assert ("at least 15 % below, significantly; 0 when flagged before): median 6.0, worst 10; "
            "flagged on or before that day: 0") in table
    missed = report([slow, replace(slow, seed=3, flags=[])], units=8, seeds=2, seconds=1.0)
    assert f"  - not flagged: heat_wave / {MODEL} / seed 3: lost 15 % on day {later + 1} of {SIMULATED_DAYS}" in missed
    assert "not flagged" not in table


def test_days_to_recover_count_to_the_first_week_served_back_at_the_level() -> None:
    """From the flag to the first 7 days pooled back within 3 points of the pre-drift level."""
    probe = Pair("heat_wave", 1, MODEL)
    flag = probe.drift_day + 3
    frozen = {day: (8 if day <= probe.drift_day else 3, 10) for day in range(1, SIMULATED_DAYS + 1)}
    served = {day: (8 if day <= probe.drift_day or day >= flag + 4 else 3, 10) for day in frozen}
    pair = Pair("heat_wave", 1, MODEL, daily=served, frozen=frozen, oracle=0.9, flags=[flag])
    # the week from flag + 3 holds 1 day at 0.3 and 6 at 0.8: 0.73, under 0.77; from flag + 4 on, 0.8
    assert pair.summary()["recovery_days"] == 4
    assert replace(pair, daily=frozen).summary()["recovery_days"] is None, "never back"
    steady = {day: (8, 10) for day in frozen}
    false_alarm = Pair("stable", 1, MODEL, daily=steady, frozen=steady, oracle=0.8, flags=[5])
    too_late = replace(pair, seed=3, flags=[SIMULATED_DAYS - 3])  # no week after the flag to judge it by
    assert too_late.summary()["recovered"] is None
    table = report([pair, replace(pair, seed=2, daily=frozen), too_late, false_alarm], units=8, seeds=3, seconds=1.0)
    assert "- days from the flag to the first 7 days served back at that level: median 4, worst 4; 2 flagged" in table
    assert "from 7 days after the flag: 1 of 3 (1 flagged too late for a week after the flag to fit" in table
    per_90 = 90 / SIMULATED_DAYS  # one false retrain in one stable model's simulated days
    assert f"= {per_90:.2f} false retrains per model per 90 days ({per_90 / 0.9:.2f} per 100 stable" in table


def test_the_report_says_how_often_the_labels_alone_would_hide_a_perfect_recovery() -> None:
    """A version serving exactly at a pair's level is judged back only as often as its labels' noise
    allows: the report sums that chance over the judged pairs (a simulation of the judgement agrees)."""
    probe = Pair("heat_wave", 1, MODEL)
    flag = probe.drift_day + 3
    frozen = {day: (8 if day <= probe.drift_day else 3, 10) for day in range(1, SIMULATED_DAYS + 1)}
    pair = Pair("heat_wave", 1, MODEL, daily=frozen, frozen=frozen, oracle=0.9, flags=[flag])
    summary = pair.summary()
    assert summary["target"] == pytest.approx(0.8)
    labels = 10 * (SIMULATED_DAYS - (flag + RECOVERY_DAYS) + 1)  # the judged days' labels
    right = np.random.default_rng(0).binomial(labels, 0.8, 200_000)
    assert summary["chance_back"] == pytest.approx(float(np.mean(right / labels >= 0.8 - RECOVERED_POINTS)), abs=0.005)
    richer = {day: (80 if day <= probe.drift_day else 30, 100) for day in frozen}
    assert summary["chance_back"] < replace(pair, daily=richer, frozen=richer).summary()["chance_back"] < 1
    assert replace(pair, flags=[SIMULATED_DAYS - 3]).summary()["chance_back"] is None, "too late to judge"
    table = report([pair, replace(pair, seed=2)], units=8, seeds=2, seconds=1.0)
    assert (f"judged back in {2 * summary['chance_back']:.1f} of 2 on average ({summary['chance_back']:.0%}): what "
            "the labels' noise alone leaves of a perfect recovery") in table


def test_the_window_benchmark_judges_every_window_on_one_hold_out_and_the_panel(tmp_path: Path) -> None:
    """`benchmarks.drift_windows`: after a heat wave, each window's candidate has a hold-out and a
    panel score, and `chosen` is the 90-day weighted one exactly when the hold-out preferred it."""
    config = GeneratorConfig(end=END, days=WORLD_DAYS, units=8, seed=1,
                             drift=(DriftScenario("heat_wave", END - timedelta(days=DRIFT_DAYS)),))
    store = PlantDataStore(database_url=f"sqlite:///{tmp_path / 'plant.sqlite'}")
    store.write_frames(generate(config).tables())
    panel = PlantDataStore(database_url=f"sqlite:///{tmp_path / 'panel.sqlite'}")
    panel.write_frames(panel_world(config, 32))
    scores = score_windows(store, panel, "irrigation_duration", 14)
    assert scores is not None and set(scores) == {*WINDOWS, *(f"{w}_holdout" for w in WINDOWS), "chosen"}
    assert all(0.0 <= value <= 1.0 for value in scores.values())
    whole = scores["90w_holdout"] > scores["recent_holdout"]
    assert scores["chosen"] == scores["90w" if whole else "recent"]
    # three months of a hobby grower's watering teach more than the weeks since a heat wave (BENCHMARKS.md)
    assert scores["90w"] > scores["recent"], scores
