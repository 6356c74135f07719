"""The promotion gate (the spec's rollback rule, done before serving) and the retrain result.

The spec rolls back *after* deploying a worse model. We judge first: the candidate and the active
version are evaluated on the same fresh hold-out, and the candidate becomes active only if it
meets the catalog's absolute floor and is not more than `tolerance_pct` percent (relative) worse.
A rejected candidate is kept for inspection; the active model is never touched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from retraining_pipelines.catalog import ModelSpec

#: The spec's rule: roll back when the new accuracy is more than 5 % worse than the old.
ROLLBACK_TOLERANCE_PCT = 5.0


def relative_improvement(old_accuracy: float | None, new_accuracy: float) -> float | None:
    """Accuracy change relative to the old one, in percent: 0.87 -> 0.91 is 4.6 (None without an old)."""
    if old_accuracy is None:
        return None
    if old_accuracy <= 0:
        return 0.0 if new_accuracy <= 0 else 100.0
    return 100.0 * (new_accuracy - old_accuracy) / old_accuracy


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    improvement: float | None


def decide(
    spec: ModelSpec,
    candidate_metrics: dict[str, float],
    active_metrics: dict[str, float] | None,
    tolerance_pct: float = ROLLBACK_TOLERANCE_PCT,
) -> GateDecision:
    """Promote or reject a candidate, with the reason a person would want to read."""
    new = candidate_metrics["accuracy"]
    improvement = relative_improvement(active_metrics["accuracy"] if active_metrics else None, new)
    if not spec.floor.passes(candidate_metrics):
        return GateDecision(False, f"below the quality floor ({spec.floor.describe()})", improvement)
    if improvement is None:
        return GateDecision(True, "first version: no active model to compare with", None)
    if improvement < -tolerance_pct:
        return GateDecision(
            False,
            f"accuracy {new:.2%} is {-improvement:.1f} % worse than the active model's "
            f"{active_metrics['accuracy']:.2%} (limit {tolerance_pct:g} %)",
            improvement,
        )
    return GateDecision(True, f"accuracy {new:.2%}, {improvement:+.1f} % vs the active model", improvement)


@dataclass
class RetrainingResult:
    """The spec's `RetrainingResult`, plus what happened at the gate and why."""

    model_type: str
    old_version: str | None
    new_version: str
    old_metrics: dict[str, float]
    new_metrics: dict[str, float]
    improvement: float | None
    training_samples: int
    training_duration: float
    promoted: bool = False
    reason: str = ""
    active_version: str | None = None
    trigger: str = "manual"
    run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The spec's JSON shape (improvement rounded to one decimal, as in its example)."""
        out = asdict(self)
        out.pop("extra")
        if self.improvement is not None:
            out["improvement"] = round(self.improvement, 1)
        return out
