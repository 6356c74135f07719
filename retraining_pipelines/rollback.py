"""Rollback as a job, so it is one click (with config) in the Dagster UI's launchpad."""

import dagster as dg
from pydantic import Field

from retraining_pipelines.assets import require_recorded_instance
from retraining_pipelines.catalog import MODEL_TYPES
from retraining_pipelines.errors import RetrainingError
from retraining_pipelines.io_manager import ModelRegistryResource
from retraining_pipelines.notifications import Notifier, rolled_back_event
from retraining_pipelines.registry import trigger_from_tags


class RollbackConfig(dg.Config):
    model_type: str = Field(description=f"One of: {', '.join(MODEL_TYPES)}")
    to_version: str | None = Field(default=None, description="Unset: the previous archived version.")
    reason: str = Field(default="rollback requested from the Dagster UI")


@dg.op(description="Restore an earlier version of a model as the active one (checked to load first).")
def rollback_model(
    context: dg.OpExecutionContext, config: RollbackConfig, model_registry: ModelRegistryResource, notifier: Notifier
) -> dg.Output[dict]:
    require_recorded_instance(context.instance)
    run = {"trigger": trigger_from_tags(context.run.tags), "run_id": context.run.run_id}
    try:
        old, new = model_registry.get().rollback(config.model_type, config.to_version, reason=config.reason, **run)
    except RetrainingError as err:
        raise dg.Failure(description=str(err), allow_retries=False) from err
    payload, message = rolled_back_event(config.model_type, old, new, config.reason, **run)
    notifier.send(payload, message)
    context.log.warning(message)
    return dg.Output({"model_type": config.model_type, "from_version": old, "to_version": new},
                     metadata={"from_version": old, "to_version": new, "reason": config.reason})


@dg.job(description="Roll a model type back to its previous (or a named) version.")
def rollback_model_job() -> None:
    rollback_model()
