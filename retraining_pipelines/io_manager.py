"""The registry as Dagster sees it: a resource, and the IO manager that versions `trained_model`.

Every materialization of `trained_model` becomes a new immutable, checksummed CANDIDATE version in
the registry directory; its version, path and checksum are output metadata in the UI. Loading the
model for a downstream asset verifies the checksum first.
"""

import os
import pickle
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from retraining_pipelines.errors import RegistryError
from retraining_pipelines.promotion import ROLLBACK_TOLERANCE_PCT
from retraining_pipelines.registry import DEFAULT_KEEP_ARCHIVED, ModelMetadata, ModelRegistry, ModelVersion
from retraining_pipelines.settings import dagster_home, registry_dir
from retraining_pipelines.training import TrainedModel


class ModelRegistryResource(dg.ConfigurableResource):
    """Registry settings; `get()` opens the registry."""

    registry_dir: str | None = Field(
        default=None, description="Registry directory; unset: $MODEL_REGISTRY_DIR, else DAGSTER_HOME/model_registry."
    )
    keep_archived: int = Field(default=DEFAULT_KEEP_ARCHIVED, description="Archived/rejected versions kept per model.")
    rollback_tolerance_pct: float = Field(
        default=ROLLBACK_TOLERANCE_PCT, description="Reject a candidate more than this % (relative) less accurate."
    )

    def get(self) -> ModelRegistry:
        return ModelRegistry(self.registry_dir or registry_dir(), keep_archived=self.keep_archived)


class RunHandOver:
    """What a run's step produced, kept in memory for the later steps of the same run.

    Keyed by (run id, key). A key produced again by another run replaces the older entry, and every
    hand-over first drops the entries of runs that have ended - a Celery worker's pool process runs
    one retrain after another and must not keep the last one's data. The service also `release`s a
    run as soon as it returns; a launched run's own process simply exits. Thread-safe: the REST API
    runs retrains in threads.
    """

    def __init__(self) -> None:
        self._items: dict[tuple[str, Any], Any] = {}
        self._lock = threading.Lock()

    def put(self, run_id: str, key: Any, obj: Any, ended: Callable[[str], bool], newest_only: bool = False) -> None:
        """Hand `obj` over; `newest_only` also drops what earlier steps of this run handed over."""
        with self._lock:
            others = {rid for rid, _ in self._items if rid != run_id}
        gone = {rid for rid in others if ended(rid)}  # asked outside the lock: a query of the instance
        with self._lock:
            for stale in [k for k in self._items
                          if k[1] == key or k[0] in gone or (newest_only and k[0] == run_id)]:
                del self._items[stale]
            self._items[(run_id, key)] = obj

    def take(self, run_id: str | None, key: Any, keep: bool = False) -> Any | None:
        """The run's object for `key` (None: not here); `keep` leaves it for another consumer."""
        if run_id is None:
            return None
        with self._lock:
            return self._items.get((run_id, key)) if keep else self._items.pop((run_id, key), None)

    def entries(self) -> list[tuple[str, Any]]:
        with self._lock:
            return list(self._items)

    def release(self, run_id: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == run_id]:
                del self._items[key]


#: The model a step just registered, by (run id, model type), until the gate of the same run takes it.
#: A model moves from training to validation once: streamed to disk and hashed on the way, then
#: handed over in memory *without its estimator* - the gate scores the candidate from the hold-out
#: predictions made at training, so the forest (92 MB at 100k rows, 226 MB at 1M) is freed as soon
#: as it is written, before the champion is loaded beside it.
MODELS = RunHandOver()
#: Samples and features by (run id, (asset key, partition)): written to their run-scoped pickle for
#: a later re-execution, and handed to the next steps of the same run as the very object - not an
#: unpickled second copy beside the one `execute_in_process` keeps (at 1M rows the data, not the
#: model, is a run's peak).
DATASETS = RunHandOver()


def _ended(instance: dg.DagsterInstance) -> Callable[[str], bool]:
    def ended(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is None or run.is_finished
    return ended


def release_run(run_id: str) -> None:
    """Forget everything a finished run handed over (the service calls it when a run returns)."""
    MODELS.release(run_id)
    DATASETS.release(run_id)


class ModelRegistryIOManager(dg.ConfigurableIOManager):
    """Stores `TrainedModel` outputs as registry versions and loads them back, verified.

    Within one run and process the gate gets what was registered, from memory (nothing can have
    changed it); a gate re-executed in another run or process loads the file, checksum first.
    """

    model_registry: ModelRegistryResource

    def handle_output(self, context: dg.OutputContext, obj: TrainedModel) -> None:
        record = self.model_registry.get().register_model(
            context.asset_partition_key,
            obj.estimator,
            ModelMetadata(
                model_type=obj.model_type,
                feature_names=obj.feature_names,
                training_samples=obj.training_samples,
                training_duration=obj.training_duration,
                performance_metrics=obj.metrics,
                hyperparameters=obj.hyperparameters,
                data_fingerprint=obj.data_fingerprint,
                run_id=obj.run_id,
                trigger=obj.trigger,
                train_start_ts=obj.train_start_ts,
                train_end_ts=obj.train_end_ts,
                seen_until_ts=obj.seen_until_ts,
                recent_from_ts=obj.recent_from_ts,
                learned_holdout=obj.learned_holdout,
            ),
            keep_warm=True,  # nothing changes the candidate after its run: the next gate may predict with it
        )
        obj.version = record.version
        MODELS.put(context.run_id, obj.model_type, obj, _ended(context.step_context.instance))
        if obj.holdout is not None:
            # Written and checksummed: the registry holds the model now. Dropping the estimator here
            # (not a copy without it) frees it in every path - `execute_in_process` keeps each step's
            # output value for the whole run, so a copy would leave the forest in memory beside the
            # champion the gate loads. (A small one stays for the next gate: `keep_warm` above.)
            obj.estimator = None
        context.add_output_metadata({
            "version": record.version,
            # a materialization is a snapshot: the gate decides later, in validation_metrics
            "registered_as": f"{record.status.value} (validation_metrics decides whether it is served)",
            "path": dg.MetadataValue.path(str(record.path)),
            "sha256": record.sha256,
            "size_bytes": dg.MetadataValue.int(record.size_bytes),
        })

    def load_input(self, context: dg.InputContext) -> TrainedModel:
        """The candidate this run trained - never "the latest": parallel runs each gate their own."""
        model_type = context.asset_partition_key
        registry = self.model_registry.get()
        producer = self._producer_run(context)
        # only within its own run: another run's gate may judge other features
        handed = MODELS.take(producer, model_type) if producer == _this_run(context) else None
        if handed is not None:
            return handed
        record = self._version_of_this_run(producer, context, registry, model_type)
        estimator, record = registry.load_version(model_type, record.version)
        return TrainedModel(
            model_type=model_type,
            estimator=estimator,
            feature_names=record.feature_names,
            training_samples=record.training_samples,
            training_duration=record.training_duration,
            hyperparameters=record.hyperparameters,
            data_fingerprint=record.data_fingerprint,
            metrics=record.metrics,
            trigger=record.trigger,
            run_id=record.run_id,
            version=record.version,
            train_start_ts=record.train_start_ts,
            train_end_ts=record.train_end_ts,
            seen_until_ts=record.seen_until_ts,
            recent_from_ts=record.recent_from_ts,
            learned_holdout=record.learned_holdout,
        )

    @staticmethod
    def _producer_run(context: dg.InputContext) -> str | None:
        """The run that produced the input: this run, or the one a re-execution comes from."""
        try:
            return context.upstream_output.run_id if context.upstream_output is not None else None
        except dg.DagsterInvariantViolationError:  # an input context built without a run (direct tests)
            return None

    @staticmethod
    def _version_of_this_run(producer: str | None, context: dg.InputContext, registry: ModelRegistry,
                             model_type: str) -> ModelVersion:
        """The version registered by the run that produced the input (this run, or the one re-executed).

        A run that only re-materializes the validation step gets the version of the last
        materialization of `trained_model` (its output metadata), which the UI shows.
        """
        if producer:
            record = registry.version_of_run(model_type, producer)
            if record is not None:
                return record
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[model_type]), limit=1
        ).records
        entry = records[0].asset_materialization.metadata.get("version") if records else None
        if entry is None:
            raise RegistryError(f"No trained {model_type} model to validate: materialize trained_model first.")
        return registry.get_version(model_type, entry.value)


def _this_run(context: dg.InputContext) -> str | None:
    try:
        return context.step_context.run_id
    except dg.DagsterInvariantViolationError:  # an input context built without a run (direct tests)
        return None


#: Intermediate pickles of other runs are removed once this old (a live run never takes this long).
RUN_FILES_KEPT_S = 6 * 3600


class RunScopedPickleIOManager(dg.ConfigurableIOManager):
    """Samples and features between steps, one file per run: parallel runs of one model type never mix.

    Dagster's default filesystem IO manager keeps one file per asset partition, so two retrains of
    the same model type overwrote each other's samples mid-run (a truncated read, or worse, a gate
    judging on another run's rows). Here the path has the run id, writes are atomic (temporary file,
    then rename), and a step re-run on its own reads the files of the run that last materialized its
    input. Within the producing run the next steps get the object itself (`DATASETS`); consumers
    only read it (features are split by `iloc`, never changed in place).
    """

    base_dir: str | None = Field(default=None, description="Unset: DAGSTER_HOME/storage/runs.")

    @property
    def root(self) -> Path:
        return Path(self.base_dir) if self.base_dir else dagster_home() / "storage" / "runs"

    def _path(self, asset_key: dg.AssetKey, partition: str, run_id: str) -> Path:
        return self.root.joinpath(*asset_key.path, partition, f"{run_id}.pkl")

    def _output_path(self, context: dg.OutputContext) -> Path:
        if context.has_asset_key:
            return self._path(context.asset_key, context.asset_partition_key, context.run_id)
        return self.root.joinpath("ops", context.step_key, context.name, f"{context.run_id}.pkl")  # e.g. rollback

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        path = self._output_path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{uuid.uuid4().hex}.tmp")
        with open(staging, "wb") as fh:
            pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(staging, path)
        self._forget_old_runs(path)
        if context.has_asset_key:
            # newest only: a launched run keeps no output of its own, so holding the samples while the
            # model trains would cost what the hand-over saves; the chain's next step has taken them
            # (a later reader falls back to the file)
            DATASETS.put(context.run_id, (context.asset_key, context.asset_partition_key), obj,
                         _ended(context.step_context.instance), newest_only=True)

    def load_input(self, context: dg.InputContext) -> Any:
        upstream = context.upstream_output
        if not upstream.has_asset_key:
            return pickle.loads(self._output_path(upstream).read_bytes())
        partition = context.asset_partition_key
        if upstream.run_id == _this_run(context):
            handed = DATASETS.take(upstream.run_id, (upstream.asset_key, partition), keep=True)
            if handed is not None:
                return handed
        path = self._path(upstream.asset_key, partition, upstream.run_id)
        if not path.exists():  # the producer was not part of this run: the last materialization's run
            records = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=upstream.asset_key, asset_partitions=[partition]), limit=1).records
            if not records:
                raise RegistryError(f"Nothing materialized yet for {upstream.asset_key.to_user_string()} "
                                    f"[{partition}]: materialize it first.")
            path = self._path(upstream.asset_key, partition, records[0].run_id)
        with open(path, "rb") as fh:
            return pickle.load(fh)  # our own run's file, written by this code location

    @staticmethod
    def _forget_old_runs(path: Path) -> None:
        cutoff = time.time() - RUN_FILES_KEPT_S
        for other in path.parent.glob("*.pkl"):
            if other != path and other.stat().st_mtime < cutoff:
                other.unlink(missing_ok=True)
