"""Small helpers for driving the real pipeline in tests."""

from __future__ import annotations

from typing import Any

import dagster as dg

from retraining_pipelines.assets import RETRAIN_ASSETS
from retraining_pipelines.code_location import build_definitions, default_resources
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.io_manager import ModelRegistryResource
from retraining_pipelines.jobstore import JobStore
from retraining_pipelines.notifications import Notifier

ASSET_NAMES = [a.key.to_user_string() for a in RETRAIN_ASSETS]


def retrain(
    model_type: str,
    store: PlantDataStore,
    instance: dg.DagsterInstance,
    samples_config: dict[str, Any] | None = None,
    resources: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize one model type's partition, as the UI's "Materialize" button does."""
    run_config = {"ops": {"training_samples": {"config": samples_config}}} if samples_config else None
    return dg.materialize(
        RETRAIN_ASSETS,
        partition_key=model_type,
        instance=instance,
        resources={**pipeline_resources(store), **(resources or {})},
        run_config=run_config,
        raise_on_error=False,
        tags=tags,
    )


def pipeline_resources(store: PlantDataStore, registry_dir: str | None = None, **registry: Any) -> dict[str, Any]:
    """The definitions' resources, with the test's plant store (registry: DAGSTER_HOME default)."""
    return default_resources(store, ModelRegistryResource(registry_dir=registry_dir, **registry), Notifier())


def failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """Each failed step's error message, with the messages of its causes (Dagster wraps them)."""
    messages = []
    for event in result.all_events:
        if not event.is_step_failure or event.event_specific_data.error is None:
            continue
        error, parts = event.event_specific_data.error, []
        while error is not None:
            parts.append(error.message)
            error = error.cause
        messages.append("\n".join(parts))
    return messages


def materialized(instance: dg.DagsterInstance, asset: str, partition: str) -> bool:
    """Whether the instance has ever recorded a materialization of that asset partition."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return bool(records)


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    mat = result.asset_materializations_for_node(asset)[-1]
    return {k: v.value for k, v in mat.metadata.items()}


def drift_sensor_tick(jobs: JobStore, resources: dict[str, Any], instance: dg.DagsterInstance,
                      cursor: str | None = None) -> dg.SensorResult:
    """One tick of the drift sensor over these jobs, with the definitions the daemon would load."""
    defs = build_definitions(job_store=jobs, resources=resources)
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs) as context:
        return defs.resolve_sensor_def("drift_sensor")(context)


def notify_failure(failed: dg.ExecuteInProcessResult, instance: dg.DagsterInstance, store: PlantDataStore) -> None:
    """Run the `retrain_failure_notifier` sensor on a failed run, as the daemon would."""
    from retraining_pipelines.notifications import retrain_failure_notifier

    failure_event = next(e for e in failed.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    context = dg.build_run_status_sensor_context(
        sensor_name="retrain_failure_notifier", dagster_event=failure_event, dagster_instance=instance,
        dagster_run=failed.dagster_run,
        resources={"notifier": Notifier(), "model_registry": pipeline_resources(store)["model_registry"]},
    ).for_run_failure()
    retrain_failure_notifier(context)
