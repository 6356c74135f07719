"""Exceptions the service raises.

Every input error names the field and what is allowed, because the people who read these
messages are app engineers looking at a failed run in the Dagster UI or an HTTP 400 body, not
at our source code.
"""

from __future__ import annotations

from collections.abc import Iterable


class RetrainingError(Exception):
    """Base class, so callers can catch everything the service raises on purpose."""


class InvalidFieldError(RetrainingError, ValueError):
    """A caller-supplied value is not allowed; nothing was changed."""

    def __init__(self, field: str, value: object, allowed: str | Iterable[object]) -> None:
        if not isinstance(allowed, str):
            allowed = ", ".join(repr(a) for a in allowed)
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"Invalid {field}: {value!r}. Allowed: {allowed}")


class InsufficientSamplesError(RetrainingError):
    """Too few labelled examples to train on; retraining is skipped, not attempted."""

    def __init__(self, model_type: str, available: int, required: int, time_range: str) -> None:
        self.model_type = model_type
        self.available = available
        self.required = required
        self.time_range = time_range
        super().__init__(
            f"Insufficient samples: {available} < {required} for {model_type} in {time_range}"
        )


class ModelIntegrityError(RetrainingError):
    """A stored artifact does not match what the registry recorded; it is never loaded."""


class RegistryError(RetrainingError):
    """A registry operation cannot be done in the registry's current state."""


class RetrainingSkipped(RetrainingError):
    """Retraining was not needed (no drift) and was not forced; nothing was run."""


class StorageError(RetrainingError):
    """A store the service keeps its state in cannot be opened or written; names the path or URL."""

    def __init__(self, what: str, where: object, cause: BaseException) -> None:
        self.what, self.where = what, where
        detail = getattr(cause, "orig", None) or cause  # SQLAlchemy wraps the driver's error
        super().__init__(f"Cannot use the {what} at {where}: {type(detail).__name__}: {detail}. "
                         "Check that the path exists, is writable and has free space.")


class RetrainInProgress(RetrainingError):
    """A retrain of this model type is already queued or running; a second would only race it."""

    def __init__(self, model_type: str, run_id: str) -> None:
        self.model_type, self.run_id = model_type, run_id
        super().__init__(f"A retrain of {model_type} is already queued or running (run {run_id}); wait for it, "
                         f"or follow it at /api/v1/ai/retraining/runs/{run_id}.")
