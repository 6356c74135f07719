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
