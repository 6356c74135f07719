"""The retraining pipeline as Dagster assets, one partition per model type.

training_samples -> engineered_features -> trained_model -> validation_metrics. Materializing a
partition retrains that model type; a backfill over partitions retrains several. Data-quality
checks block the run before any training happens on bad data.
"""

import os
import warnings
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import dagster as dg
from pydantic import Field

from retraining_pipelines import validation
from retraining_pipelines.catalog import MODEL_TYPES, ModelSpec, get_spec
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.errors import InsufficientSamplesError, InvalidFieldError, RetrainingError
from retraining_pipelines.features import FeatureSet, engineer_features
from retraining_pipelines.io_manager import ModelRegistryResource
from retraining_pipelines.notifications import Notifier, retrained_event
from retraining_pipelines.plantdb import HOUR, TrainingSamples
from retraining_pipelines.promotion import GateOutcome, RetrainingResult, run_gate
from retraining_pipelines.registry import trigger_from_tags
from retraining_pipelines.runs import RETRAIN_JOB, tag_run_worker
from retraining_pipelines.settings import runs_per_machine
from retraining_pipelines.training import (
    PRE_CHANGE_WEIGHT,
    TrainedModel,
    cap_threads,
    choose_window,
    learn_holdout,
    threads_per_run,
    time_split,
    train_model,
)

model_type_partitions = dg.StaticPartitionsDefinition(list(MODEL_TYPES))
GROUP = "retraining"
#: Set by the drift policy on the runs it requests: the verdict's `current_accuracy`, shown on the run
#: (the window that made the case for drift; the gate reads `LIVE_ACCURACY_TAG`).
CURRENT_ACCURACY_TAG = "retraining/current_accuracy"
#: The drifted champion's accuracy since the change (`DriftMetrics.accuracy_since_change`): the gate's
#: yardstick when too few hold-out rows compare the two directly.
LIVE_ACCURACY_TAG = "retraining/accuracy_since_change"
#: Set by the drift policy: which attempt of a drift episode a run is (1, 2, ... or `FOLLOW_UP`).
ATTEMPT_TAG = "retraining/drift_attempt"
#: A follow-up retrain (`drift_policy._follow_up`): its gate puts the burden of proof on the champion.
FOLLOW_UP = "follow-up"
#: Set on every retrain run once its gate decided: promoted or rejected.
OUTCOME_TAG = "retraining/outcome"
#: Data-quality limits on the samples; beyond them training would learn sensor faults.
MAX_OUT_OF_RANGE_SHARE = 0.05
MAX_MISSING_SHARE = 0.20
MIN_ROWS_PER_CLASS = 5
#: Label rows the plant app wrote that cannot be used (unknown unit, crop or class, out-of-range
#: target, undatable timestamp). A few are the app's noise and are skipped; beyond this share the
#: app is writing something we do not understand, and training on the rest would hide it.
MAX_REJECTED_SHARE = 0.10


class SamplesConfig(dg.Config):
    """Which data a retrain uses (the spec's `time_range` and `min_samples`)."""

    time_range: str = Field(default="last_90d", description="'last_<N>d', e.g. last_90d, last_180d.")
    min_samples: int | None = Field(
        default=None, description="Minimum labelled examples; unset uses the catalog's default."
    )
    as_of: str | None = Field(
        default=None, description="Train as if it were this moment (ISO 8601 with a time zone, e.g. "
        "2026-11-01T00:00:00+00:00): the window ends here. Unset: now. For reproducible re-runs and benchmarks.",
    )

    def end(self) -> datetime | None:
        """`as_of` as an aware datetime (None: now)."""
        return None if self.as_of is None else validation.iso_moment("as_of", self.as_of)


class TrainingConfig(dg.Config):
    """How the estimator learns from the samples."""

    changed_at: str | None = Field(
        default=None, description="When a drift started (ISO 8601 with a time zone): rows from before it weigh "
        f"{PRE_CHANGE_WEIGHT:g}. Set by drift retrains from the estimated change point; unset: all rows weigh 1.",
    )

    recent_from: str | None = Field(
        default=None, description="A drift retrain's own window starts here (ISO 8601 with a time zone): the rows "
        "since the change, as the evidence dates it. The samples reach back the job's whole time_range; a candidate "
        "is fitted on each window (rows before changed_at weighted down in both), both are judged on the newest "
        "20 % of the rows from here on, and the more accurate one is kept. Unset: one candidate, the whole window.",
    )

    learn_holdout: bool = Field(
        default=False, description="Once the hold-out (the newest 20 % of the window) has judged the candidate, "
        "fit it again on the whole window so the served model learns the newest rows too; its recorded metrics "
        "stay the hold-out's. Set by drift retrains, whose newest rows are most of what the new world has shown.",
    )

    def changed_at_ts(self) -> int | None:
        if self.changed_at is None:
            return None
        return int(validation.iso_moment("changed_at", self.changed_at).timestamp())

    def recent_from_ts(self) -> int | None:
        if self.recent_from is None:
            return None
        return int(validation.iso_moment("recent_from", self.recent_from).timestamp())


def samples_run_config(time_range: str, min_samples: int, as_of: datetime | None = None,
                       changed_at: datetime | None = None, learn_holdout: bool = False,
                       recent_from: datetime | None = None) -> dict[str, Any]:
    """Run config of a retrain (`SamplesConfig`, and `TrainingConfig` after a drift): one shape everywhere."""
    config: dict[str, Any] = {"time_range": time_range, "min_samples": min_samples}
    if as_of is not None:
        config["as_of"] = as_of.isoformat()
    ops: dict[str, Any] = {"training_samples": {"config": config}}
    training: dict[str, Any] = {}
    if changed_at is not None:
        training["changed_at"] = changed_at.isoformat()
    if learn_holdout:
        training["learn_holdout"] = True
    if recent_from is not None:
        training["recent_from"] = recent_from.isoformat()
    if training:
        ops["trained_model"] = {"config": training}
    return {"ops": ops}


def require_recorded_instance(instance: dg.DagsterInstance) -> None:
    """A retrain changes the registry; a run Dagster does not record (no DAGSTER_HOME) would change it unseen.

    `dagster asset materialize` without DAGSTER_HOME runs on a throw-away instance: the UI, the
    sensors and the run history would never see the version it made active.
    """
    if instance.is_ephemeral:
        raise dg.Failure(
            description="DAGSTER_HOME is not set, so this run would change the model registry while Dagster records "
            "it nowhere (the UI would never see it). Set DAGSTER_HOME to the service's home, e.g. "
            "`export DAGSTER_HOME=$PWD/dagster_home`, and run again. Nothing was changed.",
            allow_retries=False,
        )


def fit_to_machine(instance: dg.DagsterInstance) -> int:
    """Cap this process's math threads by the thread rule (`training.threads_per_run`); returns the cap.

    Retrains sharing a machine are the worker's concurrency when a Celery worker runs this, else the
    instance's `max_concurrent_runs` (the embedded daemon starts them all here).
    """
    runs = runs_per_machine() or instance.get_concurrency_config().run_queue_config.max_concurrent_runs or 1
    threads = threads_per_run(os.cpu_count() or 1, runs)
    cap_threads(threads)  # this process only: a run's steps share it (in-process executor)
    return threads


def _check(name: str, asset: str, blocking: bool, description: str) -> dg.AssetCheckSpec:
    """Checks are partitioned like their asset: a result belongs to one model type, so a failed gate on
    disease stays visible when another model type retrains."""
    with warnings.catch_warnings():  # a preview feature in 1.13: tested here, so no warning on every import
        warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")
        return dg.AssetCheckSpec(name, asset=asset, blocking=blocking, description=description,
                                 partitions_def=model_type_partitions)


@dg.asset(
    partitions_def=model_type_partitions,
    group_name=GROUP,
    kinds={"sql", "pandas"},
    check_specs=[
        _check("physical_ranges", "training_samples", True,
               f"At most {MAX_OUT_OF_RANGE_SHARE:.0%} of sensor readings outside physical ranges."),
        _check("climate_coverage", "training_samples", True,
               f"At most {MAX_MISSING_SHARE:.0%} of unit-hours without any reading."),
        _check("usable_rows", "training_samples", True,
               f"At most {MAX_REJECTED_SHARE:.0%} of label rows unusable (unknown unit, crop or class, "
               "out-of-range target, timestamp not in epoch seconds); the metadata counts them by reason."),
        _check("rows_per_class", "training_samples", False,
               f"Classifiers: every class has at least {MIN_ROWS_PER_CLASS} examples."),
    ],
)
def training_samples(context: dg.AssetExecutionContext, config: SamplesConfig, plant_store: PlantDataStore):
    """Labelled examples for the model type in the time range, with the climate around them."""
    require_recorded_instance(context.instance)
    if not context.has_partition_key:  # launched without the tag that names the model type
        raise dg.Failure(description="This run has no model type. Launch retrain_model_job for one partition: the "
                         f"tag dagster/partition set to one of {', '.join(MODEL_TYPES)}.", allow_retries=False)
    tag_run_worker(context.instance, context.run)  # first step: say which process runs this retrain
    try:
        samples = plant_store.training_samples(context.partition_key, config.min_samples, config.time_range,
                                               config.end())
    except (InsufficientSamplesError, InvalidFieldError) as err:
        raise dg.Failure(description=str(err), allow_retries=False) from err
    labels = samples.labels
    spec = get_spec(samples.model_type)
    metadata = {
        "rows": dg.MetadataValue.int(len(labels)),
        "time_range": samples.window.time_range,
        "first_sample": dg.MetadataValue.timestamp(float(labels["ts"].min())),
        "last_sample": dg.MetadataValue.timestamp(float(labels["ts"].max())),
        "grow_units": dg.MetadataValue.int(int(labels["unit_id"].nunique())),
        "rejected_rows": dg.MetadataValue.json(samples.rejected),
        "rejected_share": dg.MetadataValue.float(round(samples.rejected_share, 4)),
    }
    if spec.task == "classification":
        balance = labels[spec.target].astype(str).value_counts(normalize=True).round(4)
        metadata["class_balance"] = dg.MetadataValue.json(balance.to_dict())
    yield dg.Output(samples, metadata=metadata)
    yield from _sample_checks(samples)


def _sample_checks(samples: TrainingSamples):
    rejected = {reason: count for reason, count in samples.rejected.items() if count}
    yield dg.AssetCheckResult(
        check_name="usable_rows",
        passed=samples.rejected_share <= MAX_REJECTED_SHARE,
        metadata={"rejected_share": dg.MetadataValue.float(round(samples.rejected_share, 4)),
                  "rejected_rows": dg.MetadataValue.json(rejected)},
        description=f"Unusable label rows by reason: {rejected}" if rejected else "Every label row is usable.",
    )
    share = samples.out_of_range_share
    yield dg.AssetCheckResult(
        check_name="physical_ranges",
        passed=share <= MAX_OUT_OF_RANGE_SHARE,
        metadata={"out_of_range_share": dg.MetadataValue.float(share)},
    )
    missing = _missing_hour_share(samples)
    yield dg.AssetCheckResult(
        check_name="climate_coverage",
        passed=missing <= MAX_MISSING_SHARE,
        metadata={"missing_hour_share": dg.MetadataValue.float(missing)},
    )
    spec = get_spec(samples.model_type)
    if spec.task == "classification":
        counts = samples.labels[spec.target].astype(str).value_counts()
        yield dg.AssetCheckResult(
            check_name="rows_per_class",
            passed=bool(counts.min() >= MIN_ROWS_PER_CLASS),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"smallest_class": str(counts.idxmin()), "smallest_count": int(counts.min())},
        )
    else:
        yield dg.AssetCheckResult(
            check_name="rows_per_class", passed=True, description="Regression model: no classes."
        )


def _missing_hour_share(samples: TrainingSamples) -> float:
    """Share of unit-hours in the window (and its lookback) that have no reading at all."""
    hourly = samples.hourly
    if hourly.empty:
        return 1.0
    span_hours = (int(hourly["hour_ts"].max()) - int(hourly["hour_ts"].min())) // HOUR + 1
    expected = span_hours * samples.labels["unit_id"].nunique()
    return max(0.0, 1.0 - len(hourly) / expected)


@dg.asset(
    partitions_def=model_type_partitions,
    group_name=GROUP,
    kinds={"pandas"},
    check_specs=[
        _check("feature_nan_share", "engineered_features", True,
               f"At most {MAX_MISSING_SHARE:.0%} of feature values missing."),
    ],
)
def engineered_features(context: dg.AssetExecutionContext, training_samples: TrainingSamples):
    """The catalog's feature set for the model type (`<model_type>_v1`), in time order."""
    features = engineer_features(training_samples)
    nan_share = float(features.X.isna().to_numpy().mean()) if len(features) else 1.0
    yield dg.Output(
        features,
        metadata={
            "rows": dg.MetadataValue.int(len(features)),
            "feature_set": features.feature_set,
            "features": dg.MetadataValue.json(features.feature_names),
            "nan_share": dg.MetadataValue.float(nan_share),
        },
    )
    yield dg.AssetCheckResult(
        check_name="feature_nan_share",
        passed=nan_share <= MAX_MISSING_SHARE,
        metadata={"nan_share": dg.MetadataValue.float(nan_share)},
    )


@dg.asset(
    partitions_def=model_type_partitions,
    group_name=GROUP,
    kinds={"scikitlearn"},
    io_manager_key="model_io_manager",
)
def trained_model(context: dg.AssetExecutionContext, config: TrainingConfig,
                  engineered_features: FeatureSet) -> dg.Output[TrainedModel]:
    """The catalog's estimator fitted on all but the most recent part of the window.

    Stored by the registry IO manager as a new CANDIDATE version; `validation_metrics` decides
    whether it becomes the active one.
    """
    require_recorded_instance(context.instance)
    threads = fit_to_machine(context.instance)
    recent_from = config.recent_from_ts()
    split = time_split(engineered_features, recent_from_ts=recent_from)
    window: dict[str, Any] = {}
    if recent_from is None:
        model = train_model(engineered_features, split, config.changed_at_ts())
    else:
        model, kept, scores = choose_window(engineered_features, split, config.changed_at_ts(), recent_from)
        window = {"recent_from": config.recent_from, "window": kept,
                  **{f"accuracy_{name}_window": _float(score) for name, score in scores.items()}}
    if config.learn_holdout:
        learn_holdout(model, engineered_features, config.changed_at_ts())
    model.trigger = trigger_from_tags(context.run.tags)
    model.run_id = context.run.run_id
    return dg.Output(
        model,
        metadata={
            "estimator": type(model.estimator).__name__,
            "threads": dg.MetadataValue.int(threads),
            "training_samples": dg.MetadataValue.int(model.training_samples),
            "training_duration": dg.MetadataValue.float(model.training_duration),
            "hyperparameters": dg.MetadataValue.json(model.hyperparameters),
            "trigger": model.trigger,
            "learned_holdout": config.learn_holdout,
            **({"changed_at": config.changed_at} if config.changed_at else {}),
            **window,
        },
    )


@dg.asset(
    partitions_def=model_type_partitions,
    group_name=GROUP,
    kinds={"scikitlearn"},
    check_specs=[
        _check("beats_naive_baseline", "validation_metrics", False,
               "The candidate's hold-out accuracy is above a majority-class / mean predictor's."),
        _check("beats_single_feature_rule", "validation_metrics", False,
               "The candidate's hold-out accuracy is above the best small rule on any one of its inputs "
               "alone (e.g. the crop calendar's stage): otherwise the model adds nothing over that input."),
        _check("quality_floor", "validation_metrics", False,
               "The catalog's absolute quality floor for this model type is met."),
        _check("promotion_gate", "validation_metrics", False,
               "The candidate was promoted: compared with the active version on hold-out rows neither was "
               "trained on (see promotion.py). A failure means the old version stays active."),
    ],
)
def validation_metrics(
    context: dg.AssetExecutionContext,
    engineered_features: FeatureSet,
    trained_model: TrainedModel,
    model_registry: ModelRegistryResource,
    notifier: Notifier,
):  # unannotated: with check specs Dagster rejects a MaterializeResult[...] annotation
    """The promotion gate (`promotion.run_gate`): this run's candidate vs the active version.

    Metrics, improvement and the decision are float/bool metadata, so the UI plots accuracy and
    improvement across versions.
    """
    require_recorded_instance(context.instance)
    fit_to_machine(context.instance)  # both versions predict under the same cap as training
    spec = get_spec(trained_model.model_type)
    asked = _training_tags(context.instance, context.run, trained_model)
    try:
        outcome = run_gate(model_registry.get(), trained_model, engineered_features,
                           tolerance_pct=model_registry.rollback_tolerance_pct, run_id=context.run.run_id,
                           live_accuracy=_live_accuracy(asked), follow_up=asked.get(ATTEMPT_TAG) == FOLLOW_UP)
    except RetrainingError as err:
        raise dg.Failure(description=str(err), allow_retries=False) from err
    result = outcome.result
    notifier.send(*retrained_event(result))
    verdict = "promoted" if result.promoted else "rejected"
    # a rejected candidate still ends in a SUCCESS run: the tag says so in the Runs list (and filters it)
    context.instance.add_run_tags(context.run.run_id, {OUTCOME_TAG: verdict})
    log = context.log.info if result.promoted else context.log.warning
    log(f"{spec.model_type} v{result.new_version}: {verdict} - {result.reason}")
    for warning in result.warnings:
        context.log.warning(f"{spec.model_type} v{result.new_version}: {warning}")
    return dg.MaterializeResult(
        value=result.to_dict(),
        metadata=_result_metadata(outcome),
        check_results=_validation_checks(spec, result, outcome),
    )


def _training_tags(instance: dg.DagsterInstance, run: dg.DagsterRun, candidate: TrainedModel) -> Mapping[str, str]:
    """The tags of the run that trained the candidate (what the drift policy asked of it): a gate can
    run in another run (its own died before it) and must judge the candidate as its own run would."""
    trained_in = run if candidate.run_id in (None, run.run_id) else instance.get_run_by_id(candidate.run_id)
    return (trained_in or run).tags


def _live_accuracy(tags: Mapping[str, str]) -> float | None:
    """The drifted champion's accuracy in production since the change, as the drift check that requested
    this run measured it."""
    try:
        return float(tags[LIVE_ACCURACY_TAG])
    except (KeyError, ValueError):
        return None


def _validation_checks(spec: ModelSpec, result: RetrainingResult, outcome: GateOutcome) -> list[dg.AssetCheckResult]:
    candidate, baseline = result.new_metrics, outcome.baseline
    rule_feature, rule_accuracy = outcome.single_feature
    return [
        dg.AssetCheckResult(
            check_name="beats_naive_baseline",
            passed=bool(candidate["accuracy"] > baseline["accuracy"]),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"accuracy": candidate["accuracy"], "baseline_accuracy": baseline["accuracy"]},
        ),
        dg.AssetCheckResult(
            check_name="beats_single_feature_rule",
            passed=bool(candidate["accuracy"] > rule_accuracy),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"accuracy": candidate["accuracy"], "single_feature_accuracy": rule_accuracy,
                      "best_single_feature": rule_feature},
        ),
        dg.AssetCheckResult(
            check_name="quality_floor",
            passed=spec.floor.passes(candidate),
            severity=dg.AssetCheckSeverity.WARN,
            description=spec.floor.describe(),
        ),
        dg.AssetCheckResult(
            check_name="promotion_gate",
            passed=result.promoted,
            severity=dg.AssetCheckSeverity.WARN,
            description=result.reason,
            metadata={"active_version": result.active_version or "none", "candidate": result.new_version},
        ),
    ]


def _float(value: float, digits: int = 4) -> dg.MetadataValue:
    """Floats rounded to what matters (accuracy to 0.01 %, improvement to 0.01 points), not -5.9999999999999964."""
    return dg.MetadataValue.float(round(float(value), digits))


def _result_metadata(outcome: GateOutcome) -> dict:
    result, comparison = outcome.result, outcome.comparison
    metadata = {name: _float(value) for name, value in result.new_metrics.items()}
    # one series per model type in Plots -> Events (the shared `accuracy` line mixes all seven models)
    served = result.new_metrics if result.promoted else result.old_metrics
    metadata[f"{result.model_type}_accuracy"] = _float(result.new_metrics["accuracy"])
    if result.active_version is not None and served:
        metadata[f"{result.model_type}_served_accuracy"] = _float(served["accuracy"])
        metadata["served_accuracy"] = _float(served["accuracy"])  # Plots -> Partitions: what each model serves
    if result.old_version is not None:  # the plot compares versions; a first version has none to compare with
        metadata["improvement"] = _float(result.improvement, 2)
        metadata["old_accuracy"] = _float(result.old_metrics["accuracy"])
        metadata["candidate_accuracy_compared"] = _float(comparison.candidate["accuracy"])
        metadata["old_version"] = result.old_version
    if comparison.lead_p is not None:  # how surely the champion beat the candidate on the same rows
        metadata["champion_lead_p"] = _float(comparison.lead_p)
    metadata.update({
        "baseline_accuracy": _float(outcome.baseline["accuracy"]),
        "single_feature_accuracy": _float(outcome.single_feature[1]),
        "best_single_feature": outcome.single_feature[0],
        "holdout_rows": dg.MetadataValue.int(outcome.holdout_rows),
        "fair_holdout_rows": dg.MetadataValue.int(comparison.fair_rows),
        "promoted": dg.MetadataValue.bool(result.promoted),
        "new_version": result.new_version,
        "active_version": result.active_version or "none (no version has passed the gate yet)",
        "reason": result.reason,
        "compared_on": comparison.basis,
        "training_samples": dg.MetadataValue.int(result.training_samples),
        "training_duration": _float(result.training_duration, 3),
        "result": dg.MetadataValue.json(result.to_dict()),
    })
    if result.warnings:
        metadata["warnings"] = dg.MetadataValue.json(result.warnings)
    return metadata


RETRAIN_ASSETS = [training_samples, engineered_features, trained_model, validation_metrics]
retrain_model_job = dg.define_asset_job(
    RETRAIN_JOB,
    selection=dg.AssetSelection.assets(*RETRAIN_ASSETS),
    # in-process: a fresh Python per step costs 2-4 s on a Pi-class machine, more than training
    executor_def=dg.in_process_executor,
    description="Retrain one model type: samples -> features -> model -> validation.",
)
