"""The drift sensor end to end: generated drift -> logged predictions -> run request -> recovery."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from retraining_pipelines import AutomatedRetrainingService
from retraining_pipelines.assets import LIVE_ACCURACY_TAG
from retraining_pipelines.catalog import MODEL_TYPES, get_spec
from retraining_pipelines.code_location import build_definitions
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.drift import DriftDetector, DriftMetrics, predict_window, replay_predictions
from retraining_pipelines.drift_policy import (
    AS_OF_TAG,
    ATTEMPT_TAG,
    DRIFT_COOLDOWN_ENV,
    FOLLOW_UP_S,
    FOLLOW_UPS,
    FOLLOWED_UP,
    MIN_RETRAIN_DAYS,
    drift_run_config,
    evaluate_drift_jobs,
    retrain_time_range,
)
from retraining_pipelines.generator import DriftScenario, generate
from retraining_pipelines.io_manager import ModelRegistryResource
from retraining_pipelines.jobstore import JOB_ID_TAG, JobStore, validate_job
from retraining_pipelines.notifications import Notifier
from retraining_pipelines.registry import TRIGGER_TAG, ModelRegistry
from retraining_pipelines.runs import PARTITION_TAG, RETRAIN_JOB
from retraining_pipelines.service import DRIFT_CURSOR
from retraining_pipelines.training import HOLDOUT_FRACTION

from .conftest import TEST_CONFIG, project_instance
from .helpers import drift_sensor_tick, metadata_of, pipeline_resources, retrain

MODEL = "disease"
NOW = TEST_CONFIG.end


def recent_window(request: dg.RunRequest, job_range: str = "last_28d") -> str:
    """The window a drift retrain was asked to learn from: with the change dated, its recent candidate's
    (`recent_from`; the samples then reach back the job's whole `time_range`), else the samples' own."""
    ops = request.run_config["ops"]
    samples = ops["training_samples"]["config"]
    recent_from = ops.get("trained_model", {}).get("config", {}).get("recent_from")
    if recent_from is None:
        return samples["time_range"]
    assert samples["time_range"] == job_range, "the other candidate learns the job's whole window"
    end = datetime.fromisoformat(samples["as_of"]) if "as_of" in samples else datetime.now(UTC)
    return f"last_{round((end - datetime.fromisoformat(recent_from)) / timedelta(days=1))}d"
DRIFT_START = NOW - timedelta(days=30)


@dataclasses.dataclass
class World:
    store: PlantDataStore
    resources: dict
    registry: ModelRegistry
    jobs: JobStore
    instance: dg.DagsterInstance
    baseline_accuracy: float

    def confirmed(self) -> dg.SensorResult:
        """Two consecutive ticks: the first sees the drift, the second confirms it and requests."""
        first = self.sensor()
        assert first.run_requests == []
        assert "retraining when the next check confirms it" in first.skip_reason.skip_message
        return self.sensor(cursor=first.cursor)

    def sensor(self, cursor: str | None = None) -> dg.SensorResult:
        return drift_sensor_tick(self.jobs, self.resources, self.instance, cursor)


def _world(tmp: Path, drift: bool, instance: dg.DagsterInstance, drift_start: datetime = DRIFT_START,
           log_window: str = "last_7d", magnitude: float = 1.0) -> World:
    """Drift: v1.0.0 trained before `drift_start`, then the drifted rest arrives and v1 predicts it.

    Stable: v1.0.0 trained on everything up to now, judged on the week its hold-out covers.
    """
    config = dataclasses.replace(TEST_CONFIG, days=100, drift=(
        (DriftScenario("sensor_recalibration", drift_start, magnitude),) if drift else ()))
    before, after = generate(config).split(int((drift_start if drift else NOW + timedelta(days=1)).timestamp()))
    store = PlantDataStore(database_url=f"sqlite:///{tmp / 'plant.sqlite'}")
    store.write_frames(before)
    resources = {**pipeline_resources(store, registry_dir=str(tmp / "registry")), "notifier": Notifier(
        log_path=str(tmp / "notifications.jsonl"))}
    # as of the world's end: a window ending at the current hour would train v1.0.0 on fewer rows as the day goes on
    first = retrain(MODEL, store, instance, {"time_range": "last_100d", "as_of": NOW.isoformat()}, resources=resources)
    assert first.success
    store.write_frames(after)
    registry = resources["model_registry"].get()
    replay_predictions(store, registry, MODEL, log_window, end=NOW)  # the log ends where the world does, at any hour
    jobs = JobStore(tmp / "jobs.sqlite")
    jobs.add(validate_job(MODEL, "on_drift", drift_threshold=0.15, min_samples=50, time_range="last_28d"))
    return World(store, resources, registry, jobs, instance,
                 metadata_of(first, "validation_metrics")["accuracy"])


@pytest.fixture
def no_cooldown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DRIFT_COOLDOWN_ENV, "0")


@pytest.fixture(scope="module")
def stable_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with project_instance() as instance:
        yield _world(tmp_path_factory.mktemp("stable"), drift=False, instance=instance)


def test_drift_triggers_a_retrain_that_recovers_accuracy(tmp_path: Path, no_cooldown: None) -> None:
    with project_instance() as instance:
        world = _world(tmp_path, drift=True, instance=instance)
        result = world.confirmed()
        assert len(result.run_requests) == 1, result.skip_reason
        request = result.run_requests[0]
        assert request.partition_key == MODEL
        assert request.tags[TRIGGER_TAG] == "drift" and request.tags[JOB_ID_TAG] == "1"
        drift = float(request.tags["retraining/accuracy_drift"])
        current = float(request.tags["retraining/current_accuracy"])
        assert drift > 0.15 and current < world.baseline_accuracy - 0.1
        # the gate's yardstick is all the version served since the drop, not the window that made the
        # strongest case. Whether a drop is dated inside the log depends on the day's world (11 labels a
        # day, v1.0.0 trained before a drift 30 days old); the sensor counts the days from the clock.
        clock = DriftDetector(world.registry, world.store).check_logged(MODEL, end=datetime.now(UTC),
                                                                        with_features=False)
        assert float(request.tags[LIVE_ACCURACY_TAG]) == pytest.approx(clock.accuracy_since_change, abs=1e-4)
        if clock.change_days_ago is None or clock.change_before_log:  # then it is the whole logged week
            logged = predict_window(world.store, world.registry, MODEL, "1.0.0", "last_7d", end=NOW)
            since_change = float((logged["prediction"] == logged["actual"]).mean())
            assert clock.accuracy_since_change == pytest.approx(since_change, abs=1e-4)
        else:  # the days since the drop dated inside the log: far below what v1.0.0 validated at
            assert clock.accuracy_since_change < world.baseline_accuracy - 0.1

        observation = result.asset_events[0]
        assert observation.partition == MODEL and observation.metadata["drift_status"].value == "drift"
        assert observation.metadata["accuracy_drift"].value == pytest.approx(drift, abs=1e-4)
        event = Notifier(log_path=str(tmp_path / "notifications.jsonl")).read_log()[-1]
        assert event["type"] == "drift_detected" and event["job_id"] == 1

        job = build_definitions(job_store=world.jobs, resources=world.resources).resolve_job_def(RETRAIN_JOB)
        run = job.execute_in_process(partition_key=request.partition_key, run_config=request.run_config,
                                     tags=request.tags, instance=instance)
        assert run.success
        outcome = metadata_of(run, "validation_metrics")
        assert outcome["promoted"] is True and world.registry.get_active_version(MODEL) == "1.1.0"
        assert world.registry.get_version(MODEL, "1.1.0").trigger == "drift"
        # on the drifted window the new model is back within a few points of the pre-drift level,
        # while the old one, judged on the very same hold-out, is far below it
        assert outcome["accuracy"] > world.baseline_accuracy - 0.05
        assert outcome["old_accuracy"] < outcome["accuracy"] - 0.1

        again = world.sensor(cursor=result.cursor)
        assert again.run_requests == [] and "insufficient data" in again.skip_reason.skip_message


def test_a_log_drifted_from_its_first_day_retrains_on_what_the_version_never_saw(
    tmp_path: Path, no_cooldown: None
) -> None:
    """The README drift walkthrough's situation: v1.0.0 saw the world up to 14 days ago, and every day
    logged since is below its validation. The drop lies between, so the retrain learns from the
    newest row v1.0.0 saw on (stretched by the hold-out share), not from the job's whole 28 days.

    The walkthrough's magnitude too (2): at 1, the test world of some days (2026-12-08 to -11 among
    them) loses little in the drift's first nine days and drops five days ago - a change inside the log,
    rightly dated there, and not this situation. At 2 every day's world drops from the first day."""
    with project_instance() as instance:
        world = _world(tmp_path, drift=True, instance=instance, drift_start=NOW - timedelta(days=14),
                       log_window="last_14d", magnitude=2.0)
        verdict = DriftDetector(world.registry, world.store).check_logged(MODEL, end=NOW, with_features=False)
        assert verdict.change_before_log and 14 <= verdict.change_days_ago <= 15, verdict
        result = world.confirmed()
        # the sensor counts the days from the clock, not from the world's end (midnight): at 22:30 the
        # change is ~15 days back for it, and the window one day longer than at 00:30
        clock = DriftDetector(world.registry, world.store).check_logged(MODEL, end=datetime.now(UTC),
                                                                        with_features=False)
        assert len(result.run_requests) == 1, result.skip_reason
        request = result.run_requests[0]
        assert recent_window(request) == f"last_{math.ceil(clock.change_days_ago / (1 - HOLDOUT_FRACTION))}d"
        assert json.loads(result.cursor)[MODEL]["change_ts"] is None, "nothing to follow up"
        job = build_definitions(job_store=world.jobs, resources=world.resources).resolve_job_def(RETRAIN_JOB)
        run = job.execute_in_process(partition_key=MODEL, run_config=request.run_config, tags=request.tags,
                                     instance=instance)
        outcome = metadata_of(run, "validation_metrics")
        assert outcome["promoted"] is True and outcome["accuracy"] > world.baseline_accuracy - 0.05


def test_a_drifted_model_is_never_left_in_silence(tmp_path: Path, no_cooldown: None) -> None:
    """Each tick that finds the same version still drifting retries on a shorter, more recent window;
    from the fourth attempt on (three failed retrains) it also says `drift_unresolved`."""
    with project_instance() as instance:
        world = _world(tmp_path, drift=True, instance=instance)
        log = Notifier(log_path=str(tmp_path / "notifications.jsonl"))
        confirmed = world.confirmed()
        cursor = confirmed.cursor
        windows = [recent_window(confirmed.run_requests[0])]
        for _ in range(3):  # the requested retrains are never run: as if each one was rejected
            tick = world.sensor(cursor=cursor)
            assert len(tick.run_requests) == 1, tick.skip_reason
            request = tick.run_requests[0]
            windows.append(recent_window(request))
            cursor = tick.cursor
        clock = DriftDetector(world.registry, world.store).check_logged(MODEL, end=datetime.now(UTC),
                                                                        with_features=False)
        if clock.change_days_ago is None or clock.change_before_log:  # nothing dated inside the log: halve
            assert windows == ["last_28d", "last_14d", "last_7d", "last_7d"]
        else:  # a drop dated inside the log: every retry learns the days since it (retrain_time_range)
            assert len(set(windows)) == 1 and clock.change_days_ago <= int(windows[0][5:-1]) < 28, windows
        assert [json.loads(cursor)[MODEL][k] for k in ("version", "attempts")] == ["1.0.0", 4]
        assert request.tags[ATTEMPT_TAG] == "4"
        events = [e["type"] for e in log.read_log()]
        assert events.count("drift_detected") == 4 and events.count("drift_unresolved") == 1
        unresolved = log.read_log()[-1]
        assert unresolved["type"] == "drift_unresolved" and unresolved["failed_attempts"] == 3


def test_retries_back_off_by_the_cool_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with project_instance() as instance:
        world = _world(tmp_path, drift=True, instance=instance)
        monkeypatch.setenv(DRIFT_COOLDOWN_ENV, "2")
        notifier = Notifier(log_path=str(tmp_path / "n.jsonl"))
        evaluate = functools.partial(evaluate_drift_jobs, world.jobs.list("on_drift"), instance, world.store,
                                     world.registry, notifier)
        later = datetime.now(UTC) + timedelta(hours=3)  # past the cool-down after v1's training run, just now
        seen = evaluate(now=later)
        assert seen.run_requests == [] and "confirms it" in seen.skipped[MODEL]
        first = evaluate(cursor=seen.cursor, now=later)
        assert len(first.run_requests) == 1
        for hours, requested in ((1.9, False), (2.1, True)):
            tick = evaluate(cursor=first.cursor, now=later + timedelta(hours=hours))
            assert bool(tick.run_requests) is requested, tick.skipped
        assert "retry 2 in 0.1 h" in evaluate(cursor=first.cursor, now=later + timedelta(hours=1.9)).skipped[MODEL]
        second = evaluate(cursor=first.cursor, now=later + timedelta(hours=2.1))
        third_too_soon = evaluate(cursor=second.cursor, now=later + timedelta(hours=2.1 + 3.9))
        assert third_too_soon.run_requests == [], "attempt 3 waits twice the cool-down"
        assert evaluate(cursor=second.cursor, now=later + timedelta(hours=2.1 + 4.1)).run_requests


def test_a_stable_model_is_not_retrained_and_the_reason_has_the_numbers(stable_world: World, no_cooldown: None) -> None:
    """Stable, or - a couple of bad days on a dozen labels, as some of these worlds have - suspected but
    not significant: either way no retrain, and the reason says accuracy, baseline, threshold and n."""
    result = stable_world.sensor()
    assert result.run_requests == []
    message = result.skip_reason.skip_message
    status = result.asset_events[0].metadata["drift_status"].value
    assert status in ("stable", "insufficient_data"), message
    assert re.search(r"accuracy \d+\.\d\d% vs baseline \d+\.\d\d%", message) and "threshold 0.15" in message, message
    assert "n=" in message and (status == "stable" or ">= 0.05" in message), message


def test_too_few_labelled_predictions_trigger_nothing(tmp_path: Path, no_cooldown: None) -> None:
    with project_instance() as instance:
        world = _world(tmp_path, drift=True, instance=instance)
        registry_dir = world.resources["model_registry"].registry_dir
        version = world.registry.get_active_version(MODEL)
        with world.store.engine.begin() as conn:  # keep a day's worth: 10 labels, 4 of them wrong
            conn.exec_driver_sql(
                "DELETE FROM predictions WHERE id NOT IN (SELECT id FROM (SELECT id FROM predictions WHERE "
                "prediction != actual ORDER BY ts DESC LIMIT 4)) AND id NOT IN (SELECT id FROM (SELECT id FROM "
                "predictions WHERE prediction = actual ORDER BY ts DESC LIMIT 6))")
        result = world.sensor()  # 10 labels show the drop, but cannot prove it yet
        assert result.run_requests == [] and "drift suspected, not yet significant" in result.skip_reason.skip_message
        with world.store.engine.begin() as conn:  # and a handful give no verdict at all
            conn.exec_driver_sql("DELETE FROM predictions WHERE id NOT IN "
                                 "(SELECT id FROM predictions ORDER BY ts DESC LIMIT 5)")
        result = world.sensor()
        assert result.run_requests == [] and "insufficient data: 5 labelled" in result.skip_reason.skip_message
        assert ModelRegistryResource(registry_dir=registry_dir).get().get_active_version(MODEL) == version


def test_no_drift_retrain_while_one_is_queued_or_just_ran(stable_world: World) -> None:
    result = stable_world.sensor()  # the default 12 h cool-down: v1 was trained moments ago
    assert result.run_requests == [] and "within the 12 h cool-down" in result.skip_reason.skip_message
    queued = dg.DagsterRun(job_name=RETRAIN_JOB, run_id=str(uuid.uuid4()),
                           status=dg.DagsterRunStatus.STARTED, tags={PARTITION_TAG: MODEL})
    stable_world.instance.add_run(queued)
    try:
        busy = stable_world.sensor()
        assert "already queued or running" in busy.skip_reason.skip_message
    finally:
        stable_world.instance.delete_run(queued.run_id)


def test_sensor_with_no_drift_jobs_says_so(tmp_path: Path, plant_store: PlantDataStore) -> None:
    with project_instance() as instance:
        world = World(plant_store, pipeline_resources(plant_store), ModelRegistry(tmp_path / "r"),
                      JobStore(tmp_path / "jobs.sqlite"), instance, 0.0)
        assert world.sensor().skip_reason.skip_message == "no on_drift jobs"


def test_check_and_execute_jobs_confirms_drift_across_calls_then_retrains(tmp_path: Path, no_cooldown: None) -> None:
    """Without the daemon (a cron entry calling the service), the confirmation survives between calls."""
    with project_instance() as instance:
        world = _world(tmp_path, drift=True, instance=instance)
        service = AutomatedRetrainingService(plant_store=world.store, instance=instance, job_store=world.jobs,
                                             model_registry=world.resources["model_registry"],
                                             notifier=world.resources["notifier"])
        first = [e for e in service.check_and_execute_jobs() if e.trigger == "drift"]
        assert len(first) == 1 and "confirms it" in first[0].skipped
        assert (Path(os.environ["DAGSTER_HOME"]) / DRIFT_CURSOR).exists()
        second = [e for e in service.check_and_execute_jobs() if e.trigger == "drift"]
        assert len(second) == 1 and second[0].result is not None, second
        assert second[0].result.promoted and world.registry.get_active_version(MODEL) == "1.1.0"


@pytest.mark.parametrize("signal", ["accuracy", "inputs", "either"])
def test_an_input_shift_retrains_once_before_any_outcome_is_logged(tmp_path: Path, no_cooldown: None,
                                                                   signal: str) -> None:
    """A heat wave with no logged outcomes yet: only jobs that watch the inputs retrain, once per shift,
    and the retrain weighs the rows from before the shift down (its run config says from when). A week
    later, with the drifted version still active (that retrain was never served), a follow-up; a week
    after it the next one, up to `FOLLOW_UPS`."""
    # at midnight: the input shift reads whole UTC days, so a heat wave starting late in a day shows a
    # day later than one starting at its start - what "<= 3" assumes (kept should the world's end move)
    start = (NOW - timedelta(days=11)).replace(hour=0, minute=0, second=0, microsecond=0)
    config = dataclasses.replace(TEST_CONFIG, days=90, drift=(DriftScenario("heat_wave", start),))
    store = PlantDataStore(database_url=f"sqlite:///{tmp_path / 'plant.sqlite'}")
    store.write_frames(generate(config).tables())
    with project_instance() as instance:
        resources = pipeline_resources(store, registry_dir=str(tmp_path / "registry"))
        assert retrain(MODEL, store, instance, {"time_range": "last_60d", "as_of": start.isoformat()},
                       resources=resources, tags={AS_OF_TAG: start.isoformat()}).success
        jobs = JobStore(tmp_path / "jobs.sqlite")
        jobs.add(validate_job(MODEL, "on_drift", drift_threshold=0.15, min_samples=50, time_range="last_28d",
                              drift_signal=signal))
        evaluate = functools.partial(evaluate_drift_jobs, jobs.list("on_drift"), instance, store,
                                     resources["model_registry"].get(), Notifier(log_path=str(tmp_path / "n.jsonl")))
        ticks, cursor = [], None
        for day in range(1, 6):
            ticks.append(evaluate(cursor=cursor, now=start + timedelta(days=day)))
            cursor = ticks[-1].cursor
        requested = [day for day, tick in enumerate(ticks, start=1) if tick.run_requests]
        if signal == "accuracy":
            assert requested == [] and "insufficient data" in ticks[-1].skipped[MODEL]
            assert ticks[-1].measurements[MODEL].input_shift is None, "an accuracy job does not read the sensors"
            return
        assert len(requested) == 1 and requested[0] <= 3, [t.skipped.get(MODEL) for t in ticks]
        day2 = ticks[requested[0] - 1]
        assert "confirms it" in ticks[requested[0] - 2].skipped[MODEL], "seen once, confirmed by the next check"
        (request,) = day2.run_requests
        changed_at = datetime.fromisoformat(request.run_config["ops"]["trained_model"]["config"]["changed_at"])
        assert abs(changed_at - start) <= timedelta(days=1), "the retrain weighs the world before the shift down"
        assert request.run_config["ops"]["trained_model"]["config"]["learn_holdout"] is True
        # the sensors jumped with the change: the samples reach back the job's whole window, the weeks since
        # the change are the other candidate's window and the hold-out (`training.choose_window`)
        assert request.run_config["ops"]["training_samples"]["config"]["time_range"] == "last_28d"
        recent_from = datetime.fromisoformat(request.run_config["ops"]["trained_model"]["config"]["recent_from"])
        assert start - timedelta(days=MIN_RETRAIN_DAYS) <= recent_from <= start, "at least a week, from the shift"
        assert float(request.tags["retraining/input_shift_score"]) > 5
        assert "retraining/accuracy_drift" not in request.tags, "no accuracy figure is known yet"
        assert "already retrained for this shift" in ticks[requested[0]].skipped[MODEL]
        requested_at = start + timedelta(days=requested[0])
        due = requested_at + timedelta(seconds=FOLLOW_UP_S)
        assert evaluate(cursor=cursor, now=due - timedelta(hours=1)).run_requests == []
        followed = evaluate(cursor=cursor, now=due + timedelta(hours=1))
        (follow_up,) = followed.run_requests
        assert follow_up.tags[ATTEMPT_TAG] == "follow-up" and follow_up.partition_key == MODEL
        assert follow_up.run_config["ops"]["trained_model"]["config"]["changed_at"] == changed_at.isoformat()
        assert follow_up.run_config["ops"]["trained_model"]["config"]["learn_holdout"] is True
        assert "recent_from" in follow_up.run_config["ops"]["trained_model"]["config"], "the jump is still in its days"
        # a week later the next one learns two weeks of the new world; after FOLLOW_UPS, none
        cursor, due = followed.cursor, due + timedelta(hours=1, seconds=FOLLOW_UP_S)
        assert evaluate(cursor=cursor, now=due - timedelta(hours=1)).run_requests == []
        # a cursor written when an episode had one follow-up at most said `true`: that one counts
        legacy = {**cursor, MODEL: {**cursor[MODEL], FOLLOWED_UP: True}}
        assert len(evaluate(cursor=legacy, now=due).run_requests) == 1
        windows = [recent_window(follow_up)]
        for _ in range(FOLLOW_UPS - 1):
            followed = evaluate(cursor=cursor, now=due)
            (again,) = followed.run_requests
            assert again.tags[ATTEMPT_TAG] == "follow-up"
            assert again.run_config["ops"]["trained_model"]["config"]["changed_at"] == changed_at.isoformat()
            windows.append(recent_window(again))
            cursor, due = followed.cursor, due + timedelta(seconds=FOLLOW_UP_S)
        assert evaluate(cursor=cursor, now=due).run_requests == [], "FOLLOW_UPS per drift episode"
        days = [int(w.removeprefix("last_").removesuffix("d")) for w in windows]
        assert days == sorted(set(days)), f"each follow-up learns more of the new world: {windows}"
        metadata = day2.observations()[0].metadata
        assert metadata["input_shift_score"].value > 5 and "temperature" in metadata["input_shift"].value


@pytest.mark.parametrize(("change_days_ago", "before_log", "windows"), [
    (None, False, ["last_28d", "last_14d", "last_7d", "last_7d"]),  # no drop dated: each retry halves
    (10, False, ["last_13d"] * 4),  # dated inside the log: the days since it, stretched by the hold-out
    (20, True, ["last_25d", "last_14d", "last_7d", "last_7d"]),  # before the log: retries move closer
])
def test_a_drift_retrain_s_window_follows_the_dated_drop_and_retries(
    plant_store: PlantDataStore, change_days_ago: int | None, before_log: bool, windows: list[str]
) -> None:
    """`drift_policy.retrain_time_range`, the rule the end-to-end tests above see one case of a day."""
    job = validate_job(MODEL, "on_drift", drift_threshold=0.15, min_samples=50, time_range="last_28d")
    metrics = DriftMetrics(MODEL, "1.0.0", "drift", 0.3, True, 0.8, 0.5, 77, 50, 0.15, "test",
                           change_days_ago=change_days_ago, change_before_log=before_log)
    assert [retrain_time_range(job, metrics, attempt, plant_store, NOW) for attempt in (1, 2, 3, 4)] == windows


def test_a_drift_retrain_reaches_back_only_when_the_sensors_jumped_with_the_change() -> None:
    """`drift_policy.drift_run_config`: after a change of habits or of cultivar the label itself moved and
    only the weeks since teach it; after a jump of the sensors the months before still teach how labels
    follow from readings, so a second candidate learns them (BENCHMARKS.md, "the window from what changed")."""
    job = validate_job(MODEL, "on_drift", drift_threshold=0.15, min_samples=50, time_range="last_90d")
    changed_at = NOW - timedelta(days=10)
    for moved in (False, True):
        config = drift_run_config(job, "last_13d", NOW, NOW, changed_at, moved)["ops"]
        training = config["trained_model"]["config"]
        assert training["changed_at"] == changed_at.isoformat() and training["learn_holdout"] is True
        if moved:
            assert config["training_samples"]["config"]["time_range"] == "last_90d"
            assert training["recent_from"] == (NOW - timedelta(days=13)).isoformat()
        else:
            assert config["training_samples"]["config"]["time_range"] == "last_13d" and "recent_from" not in training
    undated = drift_run_config(job, "last_45d", NOW, NOW, None, True)["ops"]
    assert undated["training_samples"]["config"]["time_range"] == "last_45d", "no change dated: no recent window"
    assert "changed_at" not in undated.get("trained_model", {}).get("config", {})


def test_a_model_type_that_learns_plants_relearns_the_whole_window_after_any_change() -> None:
    """`ModelSpec.drift_learns_whole_window` (growth_stage): whatever changed, a dated drift retrain
    learns the job's whole window, older rows weighted down, one candidate; the others keep the rule
    above. A few weeks of a grower's units hold too few plants (BENCHMARKS.md, "growth_stage learns
    from the whole window after a drift")."""
    whole = {model for model in MODEL_TYPES if get_spec(model).drift_learns_whole_window}
    assert "growth_stage" in whole and MODEL not in whole
    changed_at = NOW - timedelta(days=10)
    for model in MODEL_TYPES:
        job = validate_job(model, "on_drift", drift_threshold=0.15, min_samples=50, time_range="last_90d")
        for moved in (False, True):
            config = drift_run_config(job, "last_13d", NOW, NOW, changed_at, moved)["ops"]
            training = config["trained_model"]["config"]
            assert training["changed_at"] == changed_at.isoformat() and training["learn_holdout"] is True
            window = config["training_samples"]["config"]["time_range"]
            if model in whole:
                assert window == "last_90d" and "recent_from" not in training, (model, moved)
            else:
                assert window == ("last_90d" if moved else "last_13d") and ("recent_from" in training) == moved
        undated = drift_run_config(job, "last_45d", NOW, NOW, None, False)["ops"]
        assert undated["training_samples"]["config"]["time_range"] == "last_45d", "no change dated: as before"
