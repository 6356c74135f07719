"""The registry inside the pipeline: IO manager, promotion gate, rollback job, notifications."""

from __future__ import annotations

import contextlib
import hashlib
import pickle
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest

from retraining_pipelines import AutomatedRetrainingService, io_manager
from retraining_pipelines.assets import RETRAIN_ASSETS, samples_run_config
from retraining_pipelines.catalog import get_spec
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.generator import generate
from retraining_pipelines.io_manager import ModelRegistryResource
from retraining_pipelines.notifications import Notifier, wait_for_deliveries
from retraining_pipelines.registry import ModelRegistry, ModelStatus
from retraining_pipelines.rollback import rollback_model_job
from retraining_pipelines.training import time_split

from .conftest import TEST_CONFIG
from .helpers import failure_messages, metadata_of, notify_failure, pipeline_resources, retrain
from .webhook import garbage, raw_server, trickle, webhook_server

MODEL = "disease"


@pytest.fixture
def registry(isolated_dagster_home: Path) -> ModelRegistry:
    return ModelRegistryResource().get()


def _corrupted_store(tmp_path: Path, days_kept_clean: int = 25) -> PlantDataStore:
    """Same plants, but every disease label older than the hold-out is shuffled: garbage to train on."""
    data = generate(TEST_CONFIG)
    obs = data.disease_observations
    old = obs["ts"] < TEST_CONFIG.end_ts - days_kept_clean * 86400
    rng = np.random.default_rng(0)
    obs.loc[old, "disease_type"] = rng.permutation(obs.loc[old, "disease_type"].to_numpy())
    store = PlantDataStore(database_url=f"sqlite:///{tmp_path / 'corrupted.sqlite'}")
    store.write_frames(data.tables())
    return store


def test_two_retrains_give_1_0_0_then_1_1_0_with_checksummed_artifacts(
    plant_store: PlantDataStore, instance: dg.DagsterInstance, registry: ModelRegistry
) -> None:
    first = retrain(MODEL, plant_store, instance)
    second = retrain(MODEL, plant_store, instance)
    assert first.success and second.success
    out = metadata_of(second, "trained_model")
    assert out["version"] == "1.1.0"
    path = Path(out["path"])
    assert path == registry.root / MODEL / "1.1.0" / "model.joblib"
    assert out["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    result = metadata_of(second, "validation_metrics")
    assert (result["old_version"], result["new_version"], result["active_version"]) == ("1.0.0", "1.1.0", "1.1.0")
    assert result["promoted"] is True and result["compared_on"].startswith("fair hold-out")
    # v1.0.0 never saw any of v1.1.0's hold-out; the fair rows are those *after* its last training row, so a
    # hold-out row checked in the same hour as that row (checks fall on whole hours) is left out: how many
    # depends on where the window's edge, and so the time of day, puts the cut
    assert result["fair_holdout_rows"] >= result["holdout_rows"] - 5, result
    assert result["improvement"] == pytest.approx(0.0, abs=1e-9), "same data, same model: no change"
    assert registry.get_active_version(MODEL) == "1.1.0"
    assert registry.get_version(MODEL, "1.0.0").status == ModelStatus.ARCHIVED
    record = registry.get_version(MODEL, "1.1.0")
    assert record.trigger == "manual" and record.run_id == second.run_id
    assert record.metrics["accuracy"] == pytest.approx(result["accuracy"], abs=1e-4)  # metadata is rounded to 4 digits
    assert len(record.data_fingerprint) == 64 and record.hyperparameters["n_estimators"] == 150


def test_result_metadata_and_notification_carry_the_spec_figures(
    plant_store: PlantDataStore, instance: dg.DagsterInstance
) -> None:
    result = retrain(MODEL, plant_store, instance)
    spec_result = metadata_of(result, "validation_metrics")["result"]
    for key in ("model_type", "old_version", "new_version", "old_metrics", "new_metrics", "improvement",
                "training_samples", "training_duration"):
        assert key in spec_result
    event = Notifier().read_log()[-1]
    assert event["type"] == "model_retrained" and event["new_version"] == "1.0.0"
    accuracy = spec_result["new_metrics"]["accuracy"]
    assert event["message"] == f"Model retrained: disease v1.0.0 (accuracy: {accuracy:.2%})"


def test_a_degraded_candidate_is_rejected_and_the_active_model_untouched(
    tmp_path: Path, plant_store: PlantDataStore, instance: dg.DagsterInstance, registry: ModelRegistry
) -> None:
    assert retrain(MODEL, plant_store, instance).success
    active = registry.get_version(MODEL, "1.0.0")
    before = (active.path.read_bytes(), active.path.stat().st_mtime_ns)
    result = retrain(MODEL, _corrupted_store(tmp_path), instance)
    assert result.success, "a rejection is a normal outcome, not a failed run"
    meta = metadata_of(result, "validation_metrics")
    assert meta["promoted"] is False
    assert meta["served_accuracy"] == meta["old_accuracy"] != meta["accuracy"], "the old version is still served"
    assert instance.get_run_by_id(result.run_id).tags["retraining/outcome"] == "rejected", "said in the Runs list"
    assert "worse (limit 5 %)" in meta["reason"] or "below the quality floor" in meta["reason"]
    assert meta["improvement"] < -5, "far more than the 5 % the spec's rule allows"
    assert registry.get_active_version(MODEL) == "1.0.0"
    assert registry.get_version(MODEL, "1.1.0").status == ModelStatus.REJECTED
    assert (active.path.read_bytes(), active.path.stat().st_mtime_ns) == before
    gate = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}["promotion_gate"]
    assert gate is False
    assert [(e.event, e.to_version) for e in registry.audit_trail(MODEL)][-1] == ("rejected", "1.1.0")
    assert Notifier().read_log()[-1]["type"] == "model_rejected"


def test_rollback_job_restores_the_previous_version(
    plant_store: PlantDataStore, instance: dg.DagsterInstance, registry: ModelRegistry
) -> None:
    for _ in range(2):
        assert retrain(MODEL, plant_store, instance).success
    run = rollback_model_job.execute_in_process(
        run_config={"ops": {"rollback_model": {"config": {"model_type": MODEL, "reason": "pests misclassified"}}}},
        resources=pipeline_resources(plant_store), instance=instance,
    )
    assert run.success and run.output_for_node("rollback_model") == {
        "model_type": MODEL, "from_version": "1.1.0", "to_version": "1.0.0"}
    assert registry.get_active_version(MODEL) == "1.0.0"
    last = registry.audit_trail(MODEL)[-1]
    assert (last.event, last.reason, last.run_id) == ("rolled_back", "pests misclassified", run.run_id)
    assert Notifier().read_log()[-1]["type"] == "model_rolled_back"


@pytest.mark.parametrize(
    ("config", "message"),
    [({"model_type": "../../etc"}, "model_type"), ({"model_type": MODEL}, "Nothing to roll back to"),
     ({"model_type": MODEL, "to_version": "7.0.0"}, "version")],
)
def test_rollback_job_bad_input_fails_clearly_and_changes_nothing(
    plant_store: PlantDataStore, instance: dg.DagsterInstance, registry: ModelRegistry, config: dict, message: str
) -> None:
    assert retrain(MODEL, plant_store, instance).success
    trail = len(registry.audit_trail())
    run = rollback_model_job.execute_in_process(
        run_config={"ops": {"rollback_model": {"config": config}}}, resources=pipeline_resources(plant_store),
        instance=instance, raise_on_error=False,
    )
    assert not run.success and message in failure_messages(run)[0]
    assert registry.get_active_version(MODEL) == "1.0.0" and len(registry.audit_trail()) == trail


def test_the_io_manager_refuses_a_model_changed_on_disk(
    plant_store: PlantDataStore, instance: dg.DagsterInstance, registry: ModelRegistry
) -> None:
    assert retrain(MODEL, plant_store, instance).success
    path = registry.get_version(MODEL, "1.0.0").path
    path.write_bytes(path.read_bytes()[:-10])
    only_validation = dg.materialize(
        RETRAIN_ASSETS, selection=["validation_metrics"], partition_key=MODEL, instance=instance,
        resources=pipeline_resources(plant_store), raise_on_error=False,
    )
    assert not only_validation.success
    assert "does not match the registry" in failure_messages(only_validation)[0]


def test_the_gate_gets_the_registered_model_s_predictions_not_a_reloaded_forest(
    plant_store: PlantDataStore, instance: dg.DagsterInstance, registry: ModelRegistry
) -> None:
    """A model moves from training to the gate once: its bytes streamed to disk and checksummed, its
    hold-out predictions handed to the gate of the same run without the estimator (freed once written);
    a gate re-run in a later run loads the file (checksum first) and predicts again - the same verdict."""
    partial = dg.materialize(RETRAIN_ASSETS, selection=["training_samples", "engineered_features", "trained_model"],
                             partition_key=MODEL, instance=instance, resources=pipeline_resources(plant_store))
    handed = io_manager.MODELS.take(partial.run_id, MODEL, keep=True)
    assert handed.estimator is None and handed.holdout is not None
    record = registry.get_version(MODEL, handed.version)
    assert record.sha256 == hashlib.sha256(record.path.read_bytes()).hexdigest()
    assert record.size_bytes == record.path.stat().st_size
    features = partial.asset_value("engineered_features")
    split = time_split(features)
    on_disk = registry.load_model(MODEL, handed.version)
    assert (on_disk.predict(split.X_holdout) == handed.holdout.predicted).all(), "the registered model's predictions"
    full = retrain(MODEL, plant_store, instance)
    assert [key for key in io_manager.MODELS.entries() if key[1] == MODEL] == [], "taken by its gate, the stale dropped"
    first = metadata_of(full, "validation_metrics")
    assert first["new_version"] == "1.1.0"
    gate_only = dg.materialize(RETRAIN_ASSETS, selection=["validation_metrics"], partition_key=MODEL, instance=instance,
                               resources=pipeline_resources(plant_store))
    again = metadata_of(gate_only, "validation_metrics")  # loaded from disk, verified, predicted again
    assert again["new_version"] == "1.1.0" and "already decided" in again["reason"]
    assert again["accuracy"] == first["accuracy"]



def test_the_next_gate_compares_with_the_champion_this_process_registered_and_not_once_its_file_broke(
    plant_store: PlantDataStore, instance: dg.DagsterInstance, registry: ModelRegistry
) -> None:
    """The champion the next retrain's gate predicts with is the object its own run registered (no
    unpickling): the same figures as the verified file gives. Once that file is damaged, the copy in
    memory is not trusted either: the gate compares recorded figures and says why."""
    assert retrain(MODEL, plant_store, instance).success
    champion = registry.get_version(MODEL, "1.0.0")
    warm = registry.load_for_prediction(MODEL, "1.0.0")
    assert warm is registry.load_for_prediction(MODEL, "1.0.0") is not registry.load_model(MODEL, "1.0.0")
    second = retrain(MODEL, plant_store, instance)
    meta = metadata_of(second, "validation_metrics")
    assert meta["old_version"] == "1.0.0" and meta["compared_on"].startswith("fair hold-out")
    split = time_split(second.asset_value("engineered_features"))
    fair = split.holdout_after(champion.train_end_ts)
    from_file = registry.load_model(MODEL, "1.0.0").predict(split.X_holdout[fair])
    assert meta["old_accuracy"] == round(float(np.mean(from_file == split.y_holdout[fair].to_numpy())), 4)
    active = registry.get_version(MODEL, registry.get_active_version(MODEL))
    active.path.write_bytes(active.path.read_bytes()[:-1] + b"x")
    third = metadata_of(retrain(MODEL, plant_store, instance), "validation_metrics")
    assert third["old_version"] == active.version
    assert third["compared_on"].startswith("recorded") and "does not match the registry" in third["compared_on"]


def test_a_gate_in_another_run_judges_a_drift_retrain_on_its_own_hold_out_and_never_on_rows_it_learned(
    plant_store: PlantDataStore, instance: dg.DagsterInstance, registry: ModelRegistry
) -> None:
    """A drift retrain's run can end between training and its gate; its gate materialized in another run
    (before run health abandons the candidate, or with no daemon) re-predicts the registered version.
    It splits as the version's own run did (the hold-out is the newest fifth of its recent window, not
    of the whole window, whose newest fifth holds rows the candidate trained on), and refuses a
    candidate fitted again on its hold-out: it would be judged on rows it learned. The refusal changes
    nothing; such a version already decided is reported with the metrics it was judged by."""
    assert retrain(MODEL, plant_store, instance).success
    recent_from = TEST_CONFIG.end - timedelta(days=21)
    untrained = ["training_samples", "engineered_features", "trained_model"]  # a run that died before its gate

    def train_only(**training: Any) -> dg.ExecuteInProcessResult:
        config = samples_run_config("last_90d", get_spec(MODEL).min_samples, TEST_CONFIG.end, changed_at=recent_from,
                                    recent_from=recent_from, **training)
        return dg.materialize(RETRAIN_ASSETS, selection=untrained, partition_key=MODEL, instance=instance,
                              resources=pipeline_resources(plant_store), run_config=config)

    def gate_only() -> dg.ExecuteInProcessResult:
        return dg.materialize(RETRAIN_ASSETS, selection=["validation_metrics"], partition_key=MODEL, instance=instance,
                              resources=pipeline_resources(plant_store), raise_on_error=False)

    trained = train_only()
    own = io_manager.MODELS.take(trained.run_id, MODEL)  # what its own gate would have judged on
    record = registry.get_version(MODEL, own.version)
    assert record.recent_from_ts == int(recent_from.timestamp()) and not record.learned_holdout
    whole_window = time_split(trained.asset_value("engineered_features"))
    assert len(own.holdout.predicted) < len(whole_window.y_holdout), "the recent window's hold-out is smaller"
    judged = gate_only()
    assert judged.success
    gate = metadata_of(judged, "validation_metrics")
    assert gate["new_version"] == own.version and gate["holdout_rows"] == len(own.holdout.predicted)
    assert gate["accuracy"] == round(own.metrics["accuracy"], 4), "the same rows, the same verdict as its own run's"

    learned = train_only(learn_holdout=True)
    io_manager.MODELS.take(learned.run_id, MODEL)
    version = metadata_of(learned, "trained_model")["version"]
    assert registry.get_version(MODEL, version).learned_holdout
    active, trail = registry.get_active_version(MODEL), len(registry.audit_trail())
    refused = gate_only()
    assert not refused.success
    message = failure_messages(refused)[0]
    assert f"v{version} learned its hold-out" in message and "stays candidate" in message, message
    assert registry.get_version(MODEL, version).status == ModelStatus.CANDIDATE
    assert registry.get_active_version(MODEL) == active and len(registry.audit_trail()) == trail

    config = samples_run_config("last_90d", get_spec(MODEL).min_samples, TEST_CONFIG.end, changed_at=recent_from,
                                recent_from=recent_from, learn_holdout=True)
    decided = dg.materialize(RETRAIN_ASSETS, partition_key=MODEL, instance=instance, run_config=config,
                             resources=pipeline_resources(plant_store))  # judged in its own run
    first = metadata_of(decided, "validation_metrics")
    status = registry.get_version(MODEL, first["new_version"]).status
    reported = gate_only()
    assert reported.success
    again = metadata_of(reported, "validation_metrics")
    assert again["new_version"] == first["new_version"] and again["accuracy"] == first["accuracy"]
    assert again["reason"].startswith(f"already decided: v{first['new_version']} is {status.value}")
    assert registry.get_version(MODEL, first["new_version"]).status == status


def test_samples_and_features_pass_between_steps_as_one_object_and_are_still_written(
    plant_store: PlantDataStore, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within a run the next steps get the object the producing step returned (not an unpickled
    second copy of 1M rows); the run-scoped file is still written, and a step re-run on its own in a
    later run reads it. A finished run's objects are released by the service."""
    unpickled: list[str] = []
    real_load = pickle.load

    def counting_load(fh: Any) -> Any:
        unpickled.append(Path(fh.name).parent.parent.name)
        return real_load(fh)

    monkeypatch.setattr(io_manager.pickle, "load", counting_load)
    run = retrain(MODEL, plant_store, instance)
    assert run.success and unpickled == [], "nothing read back from disk inside its own run"
    handed = io_manager.DATASETS.take(run.run_id, (dg.AssetKey("validation_metrics"), MODEL), keep=True)
    assert handed is run.asset_value("validation_metrics"), "the very object the step returned"
    assert [key for rid, key in io_manager.DATASETS.entries() if rid == run.run_id] == [
        (dg.AssetKey("validation_metrics"), MODEL)], "samples and features dropped once the chain moved on"
    written = Path(io_manager.RunScopedPickleIOManager().root, "engineered_features", MODEL, f"{run.run_id}.pkl")
    assert written.exists()
    gate_only = dg.materialize(RETRAIN_ASSETS, selection=["validation_metrics"], partition_key=MODEL,
                               instance=instance, resources=pipeline_resources(plant_store))
    assert gate_only.success and unpickled == ["engineered_features"], "another run reads the file"
    accuracy = metadata_of(run, "validation_metrics")["accuracy"]
    assert metadata_of(gate_only, "validation_metrics")["accuracy"] == accuracy
    held = io_manager.DATASETS.entries()
    assert len(held) == len({key for _, key in held}), "one run's object per asset partition at most"
    assert run.run_id not in {rid for rid, _ in held}, "a later run's hand-over dropped the ended run's objects"
    service = AutomatedRetrainingService(plant_store=plant_store, instance=instance)
    result = service.retrain_model(MODEL, force=True)
    assert result.run_id not in {k[0] for k in io_manager.DATASETS.entries() + io_manager.MODELS.entries()}
    assert not [k for k in io_manager.DATASETS.entries() if k[1][1] == MODEL], "the service released its run"

def test_webhook_gets_the_event_and_a_dead_webhook_never_fails_a_retrain(
    plant_store: PlantDataStore, instance: dg.DagsterInstance
) -> None:
    with webhook_server() as (url, received):
        resources = {**pipeline_resources(plant_store), "notifier": Notifier(webhook_url=url)}
        assert retrain(MODEL, plant_store, instance, resources=resources).success
        wait_for_deliveries()
    assert received[-1]["type"] == "model_retrained" and received[-1]["message"].startswith("Model retrained: disease")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"  # bound, not listening: connection refused
        resources = {**pipeline_resources(plant_store), "notifier": Notifier(webhook_url=dead, retries=1)}
        assert retrain(MODEL, plant_store, instance, resources=resources).success
    assert Notifier().read_log()[-1]["new_version"] == "1.1.0", "the log still has it"


def test_webhook_server_errors_are_retried_then_given_up(isolated_dagster_home: Path) -> None:
    with webhook_server(status=500) as (url, received):
        notifier = Notifier(webhook_url=url, retries=2)
        notifier.send({"type": "drift_detected", "model_type": MODEL}, "drift").join(10)
    assert len(received) == 3
    errors = notifier.read_errors()
    assert len(errors) == 1 and "gave up after 3 attempts: HTTP 500" in errors[0]["error"]
    assert notifier.read_log()[-1]["type"] == "drift_detected", "the event itself is in the log"


def test_unknown_notification_types_are_refused(isolated_dagster_home: Path) -> None:
    from retraining_pipelines.errors import InvalidFieldError

    with pytest.raises(InvalidFieldError, match="drift_detected"):
        Notifier().send({"type": "party"}, "no")
    assert Notifier().read_log() == []


def test_failed_runs_are_notified(plant_store: PlantDataStore, instance: dg.DagsterInstance) -> None:
    failed = retrain(MODEL, plant_store, instance, {"min_samples": 10**6})
    assert not failed.success
    notify_failure(failed, instance, plant_store)
    event = Notifier().read_log()[-1]
    assert event["type"] == "retrain_failed" and event["model_type"] == MODEL
    assert "Insufficient samples" in event["error"]


def test_backfill_and_scheduled_runs_are_recorded_with_their_trigger(
    plant_store: PlantDataStore, instance: dg.DagsterInstance, registry: ModelRegistry
) -> None:
    assert retrain(MODEL, plant_store, instance, tags={"dagster/backfill": "abc"}).success
    assert retrain(MODEL, plant_store, instance, tags={"retraining/trigger": "scheduled"}).success
    assert [registry.get_version(MODEL, v).trigger for v in ("1.0.0", "1.1.0")] == ["backfill", "scheduled"]


def test_registry_dir_is_configurable(tmp_path: Path, plant_store: PlantDataStore, instance: dg.DagsterInstance,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_REGISTRY_DIR", str(tmp_path / "elsewhere"))
    assert retrain(MODEL, plant_store, instance).success
    assert ModelRegistry(tmp_path / "elsewhere").get_active_version(MODEL) == "1.0.0"
    assert ModelRegistryResource(registry_dir=str(tmp_path / "cfg")).get().root == tmp_path / "cfg"
    assert (tmp_path / "cfg" / "registry.sqlite").exists()


@pytest.mark.parametrize("server", ["trickle", "garbage", "no scheme", "unknown scheme"])
def test_a_bad_webhook_never_decides_or_delays_a_retrain(
    plant_store: PlantDataStore, instance: dg.DagsterInstance, registry: ModelRegistry, server: str
) -> None:
    """The issue's cases: a server trickling a byte every 1.5 s held a retrain 54 s; a URL without a
    scheme or a non-HTTP answer raised out of the notifier after the new version was already active."""
    with contextlib.ExitStack() as stack:
        if server in ("trickle", "garbage"):
            url = stack.enter_context(raw_server(trickle if server == "trickle" else garbage))
        else:
            url = "127.0.0.1:9/hook" if server == "no scheme" else "gopher://127.0.0.1/hook"
        notifier = Notifier(webhook_url=url, deadline_seconds=2.0)
        resources = {**pipeline_resources(plant_store), "notifier": notifier}
        run = retrain(MODEL, plant_store, instance, resources=resources)
        assert run.success and metadata_of(run, "validation_metrics")["promoted"] is True
        assert registry.get_active_version(MODEL) == "1.0.0"
        started = time.monotonic()
        wait_for_deliveries(timeout=30)
        waited = time.monotonic() - started
    assert waited < 10, f"delivery outlived its 2 s total deadline by far ({waited:.1f} s)"
    errors = notifier.read_errors()
    assert [e["event"] for e in errors] == ["model_retrained"], errors
    expected = {"trickle": "deadline", "garbage": "BadStatusLine", "no scheme": "not an http(s) URL",
                "unknown scheme": "not an http(s) URL"}[server]
    assert expected in errors[0]["error"] or (server == "trickle" and "timed out" in errors[0]["error"])
    assert notifier.read_log()[-1]["type"] == "model_retrained", "the log has the event all the same"


def test_validation_metadata_has_one_plot_series_per_model_type(
    plant_store: PlantDataStore, instance: dg.DagsterInstance
) -> None:
    run = retrain(MODEL, plant_store, instance)
    meta = metadata_of(run, "validation_metrics")
    assert instance.get_run_by_id(run.run_id).tags["retraining/outcome"] == "promoted"
    assert meta[f"{MODEL}_accuracy"] == meta["accuracy"] == meta[f"{MODEL}_served_accuracy"] == meta["served_accuracy"]
    assert "old_version" not in meta and "improvement" not in meta, "a first version has nothing to compare with"
    assert meta["active_version"] == meta["new_version"] == "1.0.0"
    assert all(len(str(v).split(".")[-1]) <= 4 for k, v in meta.items() if isinstance(v, float))


def test_check_results_belong_to_their_model_type(plant_store: PlantDataStore, instance: dg.DagsterInstance) -> None:
    """A gate result on disease stays disease's when another model type retrains (partitioned checks)."""
    runs = {m: retrain(m, plant_store, instance).run_id for m in (MODEL, "climate_optimizer")}
    key = dg.AssetCheckKey(dg.AssetKey("validation_metrics"), "promotion_gate")
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
    assert {(r.partition, r.run_id) for r in history} == {(m, run_id) for m, run_id in runs.items()}
