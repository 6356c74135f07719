"""When drift leads to a retrain: the trigger policy (windows, cool-down, retries, escalation).

The statistics live in `drift.py`; this module decides what to do with a verdict, and the Dagster
sensor in `schedules.py` only wires it (the service's `check_and_execute_jobs` uses it too).

* One on_drift job per model type is consulted: the most sensitive (lowest threshold).
* **Which evidence.** The job's `drift_signal` says what counts: `accuracy` (the logged outcomes'
  verdict), `inputs` (the sensors' levels jumped, `drift.input_shift`: no labels needed, so a model
  whose outcomes arrive late or rarely is still retrained within days of a heat wave) or `either`.
  An input shift is answered once: while it lasts (a jump stays visible for about two weeks) it
  requests no second retrain; accuracy evidence still can.
* **Confirmed drift only.** A retrain is requested when two consecutive checks find the same
  version drifting (the daily sensor: two days; ANCHORS' "drift in two consecutive windows").
  One verdict alone cost 1.38 false retrains per model per 90 stable days in the benchmark.
* No request while a retrain of that model is queued or running, or within the cool-down
  (`RETRAINING_DRIFT_COOLDOWN_HOURS`, default 12) of the last one. Runs whose process died are
  marked failed first (`runs.sweep`), so a dead run never blocks this.
* **Learn from the world since the change - and, when the sensors moved, from what did not.** The
  drift verdict estimates when the version's logged accuracy dropped (`change_days_ago`, a
  likelihood-ratio split of its daily hits). A drift retrain learns from that day on (stretched by
  the hold-out share, at least 7 days, at most the job's `time_range`, and widened only as far as the
  job's `min_samples` need), because the older rows describe a world that is gone - and where
  `min_samples` forces older rows in (a hobby grower's ~5 irrigation outcomes a day), they are
  weighted down (`training.PRE_CHANGE_WEIGHT`). What changed decides whether the months before can
  still teach (`inputs_moved`): when the sensors' levels jumped around the change or stayed moved
  since (a heat wave, a recalibrated sensor, the season's turn; `DriftDetector.inputs_moved_since`),
  how labels follow from readings may not have, so the samples reach back the job's whole
  `time_range` and a second candidate learns all of it (older rows weighted down too); the one more
  accurate on the hold-out -
  the newest fifth of the weeks since the change - is kept (`training.choose_window`,
  `drift_run_config`). A drop without a jump (a changed habit, a new cultivar) moved the label
  itself: only the weeks since teach it. A model type whose labels follow each plant's own course
  (`ModelSpec.drift_learns_whole_window`: growth_stage) learns the whole window after any dated
  change, older rows weighted down: a few weeks of a grower's units hold too few plants. Without
  a clear change point a retrain learns the job's window, halved per retry. A drop before the
  version's first logged day (`change_before_log`: dated from the newest row the version saw) is
  dated less surely: its retries halve the window too, and it gets no follow-up.
* **Learn the newest rows too.** Every drift retrain asks the pipeline to learn its hold-out once
  the hold-out has judged it (`learn_holdout`, `training.learn_holdout`): after a change the newest
  fifth of the window is much of what the new world has shown (BENCHMARKS.md: recovered pairs
  15 -> 19 of 31).
* **Finish the recovery.** A drift retrain made days after the change still learns mostly from
  rows before it: served, it is not yet as good as the new world allows; made a day or two after
  an input shift, it may have too few new rows to beat the drifted model at all. Once a week of the
  new world has accumulated (`FOLLOW_UP_S` after the request), if the active version - the drift
  retrain or the drifted one - still learned from before the change, a follow-up retrain learns
  from the rows since it (older ones weighted down; a second candidate on the whole window again
  when the sensors moved), and the gate decides again. A week later a
  second one learns the two weeks since (`FOLLOW_UPS`): a week of a new world is still little to
  learn from at a grower's few labels a day (BENCHMARKS.md: served accuracy up on 7 of 42 rows at
  8 units and 8 at 40, none down, no more false retrains).
* **Roll back what served worse.** The gate judges a candidate before it serves; the spec's rule
  ("new accuracy more than 5 % below the old") is judged again on what it served. For two weeks
  after a version was trained, each check replays it and the version it replaced on the same
  labelled events (`drift.compare_served`); when the old one was right significantly more often
  (paired sign test, p < `LIVE_ROLLBACK_ALPHA`) and the new one is more than
  `ROLLBACK_TOLERANCE_PCT` worse, the old one is restored (a compare-and-swap: never over a
  promotion that came in between), `rolled_back` is notified, and the drift episode starts over.
  A drift retrain that learned the first days of a heat wave is the better model while the wave
  lasts and can be the worse one after it. Replays cost seconds per model, so a tick spends at
  most `LIVE_ROLLBACK_BUDGET_S` on them and compares each version once per UTC day.
* **Never silence with a drifted model active.** A drift retrain that is rejected (or fails)
  leaves the drifted version active; the next tick sees the same version still drifting and
  retries - attempt n waits `cool-down x 2^(n-2)` after the previous request, with the window the
  evidence then gives. From the `UNRESOLVED_AFTER`-th failed attempt on, each retry also sends
  `drift_unresolved`, so a person looks at it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from retraining_pipelines import validation
from retraining_pipelines.assets import (
    ATTEMPT_TAG,
    CURRENT_ACCURACY_TAG,
    FOLLOW_UP,
    LIVE_ACCURACY_TAG,
    samples_run_config,
)
from retraining_pipelines.catalog import get_spec
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.drift import (
    DRIFT_WINDOW,
    DriftDetector,
    DriftMetrics,
    InputShift,
    ServedComparison,
    compare_served,
)
from retraining_pipelines.errors import InsufficientSamplesError, ModelIntegrityError, RegistryError
from retraining_pipelines.jobstore import JOB_ID_TAG, StoredJob
from retraining_pipelines.notifications import Notifier, rolled_back_event
from retraining_pipelines.plantdb import DAY, Window
from retraining_pipelines.promotion import ROLLBACK_TOLERANCE_PCT, relative_improvement
from retraining_pipelines.registry import TRIGGER_TAG, ActiveVersionChanged, ModelRegistry
from retraining_pipelines.runs import IN_FLIGHT, PARTITION_TAG, sweep
from retraining_pipelines.training import HOLDOUT_FRACTION

logger = logging.getLogger(__name__)
DRIFT_COOLDOWN_ENV = "RETRAINING_DRIFT_COOLDOWN_HOURS"
DEFAULT_COOLDOWN_H = 12.0
#: The shortest window a retry learns from.
MIN_RETRAIN_DAYS = 7
#: After a drift retrain that still learned from pre-change rows is served, follow-up retrains on
#: the rows since the change, this long after the drift request and after each other ...
FOLLOW_UP_S = 7 * 24 * 3600
#: ... this many per drift episode.
FOLLOW_UPS = 2
#: Cursor key: follow-ups requested in the current drift episode.
FOLLOWED_UP = "followed_up"
#: Failed drift retrains of one version before each further retry also says `drift_unresolved`.
UNRESOLVED_AFTER = 3
#: Cursor key: when an input shift was first answered with a retrain (cleared when the shift is over).
INPUTS_ANSWERED = "inputs_answered_at"
#: A run that learned "as of" another moment (a replay of the past) counts from then for the cool-down.
AS_OF_TAG = "retraining/as_of"
#: How sure a live rollback must be that the replaced version served better (one check a day for two
#: weeks: 1 % keeps a stable world's equal versions from trading places).
LIVE_ROLLBACK_ALPHA = 0.01
#: Replaying two versions costs 2.5-4 s per model at 40 units: a tick spends at most this long on it
#: (sensor ticks time out after 60 s; the models left over are compared on the next tick), and each
#: version is compared once per UTC day (cursor key `SERVED_CHECKED`).
LIVE_ROLLBACK_BUDGET_S = 20.0
SERVED_CHECKED = "served_checked"


@dataclass
class DriftEvaluation:
    """What one drift check over all on_drift jobs decided."""

    run_requests: list[dg.RunRequest] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    measurements: dict[str, DriftMetrics] = field(default_factory=dict)
    cursor: dict[str, Any] = field(default_factory=dict)
    rollbacks: dict[str, ServedComparison] = field(default_factory=dict)

    def observations(self) -> list[dg.AssetObservation]:
        """Drift measurements and live rollbacks as observations on the model, so the UI shows them per
        partition."""
        return [
            *(dg.AssetObservation(asset_key="trained_model", partition=model_type, metadata=_drift_metadata(m))
              for model_type, m in self.measurements.items()),
            *(dg.AssetObservation(asset_key="trained_model", partition=model_type, metadata=_rollback_metadata(c))
              for model_type, c in self.rollbacks.items()),
        ]


def _drift_metadata(m: DriftMetrics) -> dict[str, Any]:
    metadata: dict[str, Any] = {"drift_status": m.status, "reason": m.reason, "baseline_source": m.baseline_source,
                                "labelled_predictions": dg.MetadataValue.int(m.sample_count),
                                "model_version": str(m.model_version)}
    for name in ("accuracy_drift", "current_accuracy", "baseline_accuracy"):
        value = getattr(m, name)
        if value is not None:
            metadata[name] = dg.MetadataValue.float(round(float(value), 4))
    if m.input_shift is not None and m.input_shift.score is not None:
        metadata["input_shift_score"] = dg.MetadataValue.float(round(m.input_shift.score, 2))
        metadata["input_shift"] = m.input_shift.reason
    return metadata


def _rollback_metadata(c: ServedComparison) -> dict[str, Any]:
    return {"live_rollback": f"v{c.active_version} -> v{c.previous_version}",
            "served_accuracy": dg.MetadataValue.float(round(c.active_accuracy, 4)),
            "replaced_accuracy": dg.MetadataValue.float(round(c.previous_accuracy, 4)),
            "labelled_predictions": dg.MetadataValue.int(c.labelled),
            "p_value": dg.MetadataValue.float(float(f"{c.p_value:.3g}"))}


def served_worse(c: ServedComparison) -> bool:
    """The spec's rollback rule on served events: more than 5 % worse than the version it replaced,
    and significantly so."""
    improvement = relative_improvement(c.previous_accuracy, c.active_accuracy)
    return improvement is not None and improvement < -ROLLBACK_TOLERANCE_PCT and c.p_value < LIVE_ROLLBACK_ALPHA


def drift_jobs_by_model(jobs: list[StoredJob]) -> dict[str, StoredJob]:
    """One job per model type: the most sensitive (lowest threshold) when several watch it."""
    chosen: dict[str, StoredJob] = {}
    for job in jobs:
        if job.schedule_type == "on_drift" and job.enabled:
            best = chosen.get(job.model_type)
            if best is None or job.drift_threshold < best.drift_threshold:
                chosen[job.model_type] = job
    return chosen


def cooldown() -> timedelta:
    return timedelta(hours=float(os.environ.get(DRIFT_COOLDOWN_ENV, DEFAULT_COOLDOWN_H)))


def retrain_time_range(job: StoredJob, metrics: DriftMetrics, attempt: int, store: PlantDataStore,
                       end: datetime) -> str:
    """The window a drift retrain learns from (see the module docstring)."""
    job_days = validation.time_range(job.time_range) // DAY
    halved = job_days // 2 ** (attempt - 1)
    if metrics.change_days_ago is None:
        return _widened(job, halved, store, end)
    # the rows since the change, stretched so the hold-out (the newest 20 %) is not all of them
    days = math.ceil(metrics.change_days_ago / (1 - HOLDOUT_FRACTION))
    # a drop before the log is dated only as "after the version's newest row": retries move closer
    return _widened(job, min(days, halved) if metrics.change_before_log else days, store, end)


def drift_run_config(job: StoredJob, window: str, as_of: datetime | None, now: datetime,
                     changed_at: datetime | None, inputs_moved: bool) -> dict[str, Any]:
    """A drift retrain's run config. It learns `window` (`retrain_time_range`), rows before a dated
    change weighted down - unless the sensors jumped with the change (`inputs_moved`): then `window`
    is the recent candidate's window and its newest fifth the hold-out, while the samples reach back
    the job's whole `time_range` for the other candidate (`training.choose_window`). A model type
    whose drift retrains learn the whole window (`ModelSpec.drift_learns_whole_window`) learns it alone."""
    if changed_at is not None and _learns_whole_window(job):
        return samples_run_config(job.time_range, job.min_samples, as_of, changed_at, learn_holdout=True)
    if changed_at is None or not inputs_moved:
        return samples_run_config(window, job.min_samples, as_of, changed_at, learn_holdout=True)
    recent_from = now - timedelta(seconds=validation.time_range(window))
    return samples_run_config(job.time_range, job.min_samples, as_of, changed_at, learn_holdout=True,
                              recent_from=recent_from)


def inputs_moved(detector: DriftDetector, job: StoredJob, changed_at: datetime | None, now: datetime) -> bool:
    """Whether a dated change came with a jump of the sensors: the world the model reads moved, and
    how labels follow from readings may not have (see the module docstring). Not asked (False) for a
    model type that learns the whole window after any change: the answer would not change its window,
    and asking reads the sensors' daily levels."""
    return changed_at is not None and not _learns_whole_window(job) and detector.inputs_moved_since(changed_at, now)


def _learns_whole_window(job: StoredJob) -> bool:
    return get_spec(job.model_type).drift_learns_whole_window


def _widened(job: StoredJob, days: int, store: PlantDataStore, end: datetime) -> str:
    """`days` within [MIN_RETRAIN_DAYS, the job's window], widened only as far as `min_samples` need."""
    job_days = validation.time_range(job.time_range) // DAY
    days = min(job_days, max(MIN_RETRAIN_DAYS, days))
    while days < job_days and store.count_samples(job.model_type, f"last_{days}d", end) < job.min_samples:
        days = min(job_days, days + MIN_RETRAIN_DAYS)
    return f"last_{days}d"


def evaluate_drift_jobs(
    jobs: list[StoredJob],
    instance: dg.DagsterInstance,
    store: PlantDataStore,
    registry: ModelRegistry,
    notifier: Notifier,
    cursor: dict[str, Any] | None = None,
    now: datetime | None = None,
    window: str = DRIFT_WINDOW,
) -> DriftEvaluation:
    """Decide, for each watched model type, whether to request a retrain now (and why not).

    An explicit `now` (a replay of the past, as the benchmarks do) also makes the requested retrain
    learn as of that moment.
    """
    as_of = now
    now = now or datetime.now(UTC)
    sweep(instance, registry)  # a dead run must never count as "already running"
    result = DriftEvaluation(cursor=dict(cursor or {}))
    detector = DriftDetector(registry, store)
    span = Window.last(window, now)
    watched = drift_jobs_by_model(jobs)
    served_budget = time.monotonic() + LIVE_ROLLBACK_BUDGET_S
    inputs = detector.check_inputs(now) if any(_signal(j) != "accuracy" for j in watched.values()) else None
    for model_type, job in watched.items():
        busy = _busy_reason(instance, model_type, now)
        if busy:
            result.skipped[model_type] = busy
            continue
        rolled_back = None
        if time.monotonic() < served_budget and _compare_due(result.cursor, model_type, registry, now):
            rolled_back = _roll_back_if_worse(model_type, store, registry, notifier, now)
        if rolled_back is not None:
            result.rollbacks[model_type] = rolled_back
            result.skipped[model_type] = _rollback_reason(rolled_back)
            result.cursor.pop(model_type, None)  # the restored version starts a drift episode of its own
            continue
        # the verdict and the sensors only: the per-feature report engineers 60 days of features per model
        # (~2 s each at 40 units), which a person asks for (`check_drift`), not every tick
        metrics = detector.check_logged(model_type, window, job.drift_threshold, end=now, with_features=False)
        metrics = _with_inputs(job, metrics, inputs, result.cursor, model_type)
        result.measurements[model_type] = metrics
        follow_up = _follow_up(result.cursor.get(model_type), job, registry, store, now)
        if follow_up is not None and not metrics.requires_retraining:
            changed_at = datetime.fromtimestamp(result.cursor[model_type]["change_ts"], UTC)
            moved = inputs_moved(detector, job, changed_at, now)
            result.run_requests.append(_follow_up_request(job, metrics, follow_up, as_of, now, changed_at, moved))
            last = result.cursor[model_type]
            result.cursor[model_type] = {**last, FOLLOWED_UP: int(last.get(FOLLOWED_UP, 0)) + 1,
                                         "requested_at": now.timestamp()}
            continue
        if not metrics.requires_retraining:
            result.skipped[model_type] = metrics.reason
            if "suspected" in result.cursor.get(model_type, {}):  # a one-off: the next drift starts over
                result.cursor[model_type] = {k: v for k, v in result.cursor[model_type].items() if k != "suspected"}
            continue
        unconfirmed = _unconfirmed(result.cursor, model_type, metrics)
        if unconfirmed:
            result.skipped[model_type] = unconfirmed
            continue
        attempt, wait = _attempt(result.cursor.get(model_type), metrics, now)
        if wait:
            result.skipped[model_type] = wait
            continue
        time_range = retrain_time_range(job, metrics, attempt, store, now)
        available = store.count_samples(model_type, time_range, now)
        if available < job.min_samples:
            result.skipped[model_type] = (
                f"drift, but {InsufficientSamplesError(model_type, available, job.min_samples, time_range)}")
            continue
        change = (now - timedelta(days=metrics.change_days_ago)).timestamp() if metrics.change_days_ago else None
        changed_at = datetime.fromtimestamp(change, UTC) if change else None  # as follow-ups read it back
        moved = inputs_moved(detector, job, changed_at, now)
        result.run_requests.append(_drift_request(job, metrics, span, attempt, time_range, as_of, changed_at, moved))
        answered = result.cursor.get(model_type, {}).get(INPUTS_ANSWERED)
        if inputs is not None and inputs.shifted and _signal(job) != "accuracy":
            answered = answered or now.timestamp()
        # no follow-up for a drop before the log: the retrain learns only what the version never saw,
        # and a stable world's optimistic validation looks the same (with follow-ups, an earlier trial
        # raised false retrains from 1.07 to 1.38 per model per 90 stable days)
        followable = None if metrics.change_before_log else change
        result.cursor[model_type] = {"version": metrics.model_version, "attempts": attempt,
                                     "requested_at": now.timestamp(), "time_range": time_range,
                                     "change_ts": followable,
                                     **({INPUTS_ANSWERED: answered} if answered else {})}
        _notify(notifier, job, metrics, attempt, time_range)
    return result


def _compare_due(cursor: dict[str, Any], model_type: str, registry: ModelRegistry, now: datetime) -> bool:
    """Whether the active version is yet to be compared with the one it replaced today (and mark it)."""
    key = f"{registry.get_active_version(model_type)}@{int(now.timestamp()) // DAY}"
    checked = dict(cursor.get(SERVED_CHECKED, {}))
    if checked.get(model_type) == key:
        return False
    cursor[SERVED_CHECKED] = {**checked, model_type: key}
    return True


def _roll_back_if_worse(model_type: str, store: PlantDataStore, registry: ModelRegistry, notifier: Notifier,
                        now: datetime) -> ServedComparison | None:
    """Restore the replaced version when the active one served worse (see the module docstring)."""
    comparison = compare_served(store, registry, model_type, now)
    if comparison is None or not served_worse(comparison):
        return None
    reason = _rollback_reason(comparison)
    try:
        registry.rollback(model_type, comparison.previous_version, reason=reason, trigger="drift",
                          if_active_is=comparison.active_version)
    except ActiveVersionChanged:
        return None  # promoted in between: the next check judges the new version
    except (RegistryError, ModelIntegrityError) as err:  # cannot be restored (purged, fails its checksum)
        logger.warning("%s; not restored: %s", reason, err)
        return None
    notifier.send(*rolled_back_event(model_type, comparison.active_version, comparison.previous_version, reason,
                                     trigger="drift"))
    return comparison


def _rollback_reason(c: ServedComparison) -> str:
    return (f"live rollback: {c.model_type} v{c.active_version} served {c.active_accuracy:.2%} against "
            f"{c.previous_accuracy:.2%} for v{c.previous_version}, the version it replaced, on the same "
            f"{c.labelled} labelled events (last {c.window_days} d, p={c.p_value:.2g}); v{c.previous_version} "
            "restored")


def _signal(job: StoredJob) -> str:
    return job.drift_signal or "accuracy"


def _with_inputs(job: StoredJob, metrics: DriftMetrics, inputs: InputShift | None, cursor: dict[str, Any],
                 model_type: str) -> DriftMetrics:
    """The verdict by the job's `drift_signal`: the accuracy verdict, the sensors' or either."""
    signal = _signal(job)
    if signal == "accuracy" or inputs is None:
        return metrics
    metrics = replace(metrics, input_shift=inputs)
    last = cursor.get(model_type) or {}
    if not inputs.shifted and INPUTS_ANSWERED in last:  # the shift is over: the next one is news again
        cursor[model_type] = {k: v for k, v in last.items() if k != INPUTS_ANSWERED}
    if signal == "inputs" and metrics.requires_retraining:
        metrics = replace(metrics, requires_retraining=False,
                          reason=f"accuracy is not this job's drift signal (inputs): {metrics.reason}")
    if metrics.requires_retraining or not inputs.shifted or metrics.model_version is None:
        return metrics
    if INPUTS_ANSWERED in last:
        return replace(metrics, reason=f"{inputs.reason}; already retrained for this shift ({metrics.reason})")
    return replace(metrics, status="drift", requires_retraining=True, reason=f"{inputs.reason} ({metrics.reason})",
                   change_days_ago=metrics.change_days_ago or inputs.change_days_ago)


def _follow_up(last: dict[str, Any] | None, job: StoredJob, registry: ModelRegistry, store: PlantDataStore,
               now: datetime) -> str | None:
    """The window of a follow-up retrain, once a week of the new world has accumulated since the last
    request of the episode; else None. The first one only while the active version still learned
    from before the change (a drift retrain that learned only new rows needs none); the next ones
    follow it, each with a week more of the new world."""
    if not last or not last.get("change_ts"):
        return None
    done = int(last.get(FOLLOWED_UP, 0))  # True (one) in cursors before FOLLOW_UPS
    if done >= FOLLOW_UPS:
        return None
    if now.timestamp() - float(last["requested_at"]) < FOLLOW_UP_S:
        return None
    active = registry.get_active_version(job.model_type)
    if active is None:
        return None
    if not done and (registry.get_version(job.model_type, active).train_start_ts or 0) >= last["change_ts"]:
        return None
    days = math.ceil((now.timestamp() - last["change_ts"]) / DAY / (1 - HOLDOUT_FRACTION))
    return _widened(job, days, store, now)


def _follow_up_request(job: StoredJob, metrics: DriftMetrics, time_range: str, as_of: datetime | None,
                       now: datetime, changed_at: datetime, moved: bool) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"drift-follow-up:{job.model_type}:{metrics.model_version}:{int(now.timestamp())}",
        partition_key=job.model_type,
        run_config=drift_run_config(job, time_range, as_of, now, changed_at, moved),
        tags={TRIGGER_TAG: "drift", JOB_ID_TAG: str(job.job_id), ATTEMPT_TAG: FOLLOW_UP,
              **({AS_OF_TAG: as_of.isoformat()} if as_of else {})},
    )


def _unconfirmed(cursor: dict[str, Any], model_type: str, metrics: DriftMetrics) -> str | None:
    """Why not yet: drift on a version counts once two consecutive checks say so (its retries need
    no new confirmation). Noise rarely passes the test twice in a row; a real drift does."""
    last = cursor.get(model_type) or {}
    confirmed = last.get("version") == metrics.model_version or last.get("suspected") == metrics.model_version
    if confirmed:
        return None
    cursor[model_type] = {**last, "suspected": metrics.model_version}
    return f"drift seen once ({metrics.reason}); retraining when the next check confirms it"


def _attempt(last: dict[str, Any] | None, metrics: DriftMetrics, now: datetime) -> tuple[int, str | None]:
    """Which attempt a request now would be for this drifted version, or why to wait."""
    if not last or last.get("version") != metrics.model_version:
        return 1, None
    attempt = int(last.get("attempts", 1)) + 1
    delay = cooldown() * 2 ** (attempt - 2)
    elapsed = now.timestamp() - float(last.get("requested_at", 0))
    if elapsed < delay.total_seconds():
        return attempt, (f"v{metrics.model_version} still drifts after {attempt - 1} retrain(s); retry {attempt} "
                         f"in {(delay.total_seconds() - elapsed) / 3600:.1f} h ({metrics.reason})")
    return attempt, None


def _busy_reason(instance: dg.DagsterInstance, model_type: str, now: datetime) -> str | None:
    """A retrain in flight, or one too recent: a drift retrain now would only duplicate it."""
    in_flight = instance.get_runs(dg.RunsFilter(tags={PARTITION_TAG: model_type}, statuses=IN_FLIGHT), limit=1)
    if in_flight:
        return f"a retrain of {model_type} is already queued or running (run {in_flight[0].run_id[:8]})"
    records = instance.get_run_records(dg.RunsFilter(tags={PARTITION_TAG: model_type}), limit=1)
    if records:
        as_of = records[0].dagster_run.tags.get(AS_OF_TAG)
        started = datetime.fromisoformat(as_of) if as_of else records[0].create_timestamp.astimezone(UTC)
        wait = cooldown()
        if now - started < wait:
            ago, limit = (now - started).total_seconds() / 3600, wait.total_seconds() / 3600
            return f"last retrain of {model_type} was {ago:.1f} h ago, within the {limit:g} h cool-down"
    return None


def _drift_request(job: StoredJob, metrics: DriftMetrics, span: Window, attempt: int,
                   time_range: str, as_of: datetime | None, changed_at: datetime | None,
                   moved: bool) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"drift:{job.model_type}:{metrics.model_version}:{span.end_ts}:{attempt}",
        partition_key=job.model_type,
        run_config=drift_run_config(job, time_range, as_of, datetime.fromtimestamp(span.end_ts, UTC), changed_at,
                                    moved),
        tags={
            TRIGGER_TAG: "drift",
            JOB_ID_TAG: str(job.job_id),
            ATTEMPT_TAG: str(attempt),
            **({AS_OF_TAG: as_of.isoformat()} if as_of else {}),
            "retraining/labelled_predictions": str(metrics.sample_count),
            **_figure_tags(metrics),
        },
    )


def _figure_tags(metrics: DriftMetrics) -> dict[str, str]:
    """The accuracy figures the request rests on; an input shift may come before any are known."""
    figures = {"retraining/accuracy_drift": metrics.accuracy_drift,
               "retraining/baseline_accuracy": metrics.baseline_accuracy,
               CURRENT_ACCURACY_TAG: metrics.current_accuracy, LIVE_ACCURACY_TAG: metrics.accuracy_since_change}
    tags = {name: f"{value:.4f}" for name, value in figures.items() if value is not None}
    if metrics.input_shift is not None and metrics.input_shift.score is not None:
        tags["retraining/input_shift_score"] = f"{metrics.input_shift.score:.2f}"
    return tags


def _notify(notifier: Notifier, job: StoredJob, metrics: DriftMetrics, attempt: int, time_range: str) -> None:
    event = {"type": "drift_detected", "model_type": job.model_type, "model_version": metrics.model_version,
             "job_id": job.job_id, "accuracy_drift": metrics.accuracy_drift, "threshold": job.drift_threshold,
             "baseline_accuracy": metrics.baseline_accuracy, "current_accuracy": metrics.current_accuracy,
             "labelled_predictions": metrics.sample_count, "attempt": attempt, "time_range": time_range}
    notifier.send(event, f"Drift detected: {job.model_type} v{metrics.model_version}, {metrics.reason}; "
                  f"retraining on {time_range} (attempt {attempt})")
    if attempt > UNRESOLVED_AFTER:
        notifier.send({**event, "type": "drift_unresolved", "failed_attempts": attempt - 1},
                      f"Drift unresolved: {job.model_type} v{metrics.model_version} is still active and drifting "
                      f"after {attempt - 1} retrains; retrying on {time_range}. A person should look at it.")
