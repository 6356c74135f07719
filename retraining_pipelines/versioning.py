"""The spec's version scheme, MAJOR.MINOR.PATCH, and the one rule that picks the bump.

MAJOR: the model's inputs changed (catalog feature set or estimator) - a caller must change too.
MINOR: retrained on new data or parameters - a drop-in replacement.
PATCH: metadata only - the same artifact.
"""

from __future__ import annotations

import re
from typing import Literal

from retraining_pipelines.errors import InvalidFieldError

BumpType = Literal["major", "minor", "patch"]
FIRST_VERSION = "1.0.0"
_VERSION = re.compile(r"(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})")


def parse_version(version: str, field: str = "version") -> tuple[int, int, int]:
    """(major, minor, patch), or a clear error for anything that is not exactly MAJOR.MINOR.PATCH."""
    match = _VERSION.fullmatch(version) if isinstance(version, str) else None
    if match is None:
        raise InvalidFieldError(field, version, "MAJOR.MINOR.PATCH, e.g. '1.2.0'")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def bump_version(old_version: str | None, bump_type: BumpType = "minor") -> str:
    """The spec's `_bump_version`; no previous version gives the first one, 1.0.0."""
    if old_version is None:
        return FIRST_VERSION
    major, minor, patch = parse_version(old_version)
    if bump_type == "major":
        return f"{major + 1}.0.0"
    if bump_type == "minor":
        return f"{major}.{minor + 1}.0"
    if bump_type == "patch":
        return f"{major}.{minor}.{patch + 1}"
    raise InvalidFieldError("bump_type", bump_type, ("major", "minor", "patch"))


def bump_for_retrain(previous_schema: str | None, schema: str) -> BumpType:
    """A retrain is MINOR unless the catalog changed the model's inputs since the last version."""
    return "major" if previous_schema is not None and previous_schema != schema else "minor"
