"""The boundary rules: every value a caller hands the service is checked here, once.

The Python API, the CLI, Dagster run config and the job store all call these functions, so a
value is refused the same way, with the same words, whichever door it came through. Each rule
raises `InvalidFieldError` naming the field, the value and what is allowed, and is called before
anything is written: a refused call changes nothing.

The rules are strict on purpose. `"03:00\\n"` is not a time (a stray newline from a shell or a
form would otherwise be stored and never match), `"false"` is not a boolean (it is truthy), an
empty path is not "the current directory", and numbers must be finite and fit a 64-bit column.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit
from zoneinfo import available_timezones

from retraining_pipelines.errors import InvalidFieldError

DAY_S = 86400
MAX_TIME_RANGE_DAYS = 3650
TIME_RANGE_HELP = f"'last_<N>d' with N from 1 to {MAX_TIME_RANGE_DAYS} days, e.g. 'last_90d' or 'last_180d'"
_TIME_RANGE = re.compile(r"last_([1-9][0-9]{0,3})d")
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
#: More labelled examples than this is a typo, not a requirement (and it must fit SQLite's integers).
MAX_MIN_SAMPLES = 10_000_000
#: SQLite's (and PostgreSQL's BIGINT) largest integer: ids beyond it cannot exist.
MAX_ID = 2**63 - 1
MAX_REASON_CHARS = 2000
WEEKDAYS_HELP = "0-6 for weekly jobs (0 = Monday, 6 = Sunday)"
THRESHOLD_HELP = "a number between 0 and 1 (exclusive): the relative accuracy drop, e.g. 0.15"


def whole(field: str, value: object, low: int, high: int) -> int:
    """An int in [low, high]; bools and floats are refused (True is not 1 job, 2.0 is not a count)."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidFieldError(field, value, f"a whole number from {low} to {high}")
    return value


def number(field: str, value: object, low: float, high: float, *, allowed: str | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """A finite real in the interval; NaN and infinities are refused (NaN compares false with everything)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    if not ok:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise InvalidFieldError(field, value, allowed or f"a finite number in {left}{low:g}, {high:g}{right}")
    return float(value)  # type: ignore[arg-type]


def flag(field: str, value: object) -> bool:
    """A real bool: the string "false" is truthy, so it must not be taken as one."""
    if not isinstance(value, bool):
        raise InvalidFieldError(field, value, (True, False))
    return value


def text(field: str, value: object, *, max_chars: int = MAX_REASON_CHARS) -> str:
    """Non-empty printable text, stripped of surrounding blanks."""
    if not isinstance(value, str) or not value.strip() or len(value) > max_chars or not value.isprintable():
        raise InvalidFieldError(field, value, f"non-empty text on one line, at most {max_chars} characters")
    return value.strip()


def time_range(value: object, field: str = "time_range") -> int:
    """Seconds covered by a spec-style time range such as `last_90d`."""
    match = _TIME_RANGE.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) > MAX_TIME_RANGE_DAYS:
        raise InvalidFieldError(field, value, TIME_RANGE_HELP)
    return int(match.group(1)) * DAY_S


def min_samples(value: object) -> int:
    return whole("min_samples", value, 1, MAX_MIN_SAMPLES)


def job_id(value: object) -> int:
    return whole("job_id", value, 1, MAX_ID)


def drift_threshold(value: object, field: str = "drift_threshold") -> float:
    """The relative accuracy drop that counts as drift: above 0 (else any noise is drift), below 1."""
    return number(field, value, 0.0, 1.0, low_open=True, high_open=True, allowed=THRESHOLD_HELP)


def one_of(field: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidFieldError(field, value, allowed)
    return value


def schedule_time(value: object) -> str:
    if not isinstance(value, str) or not _CLOCK.fullmatch(value):
        raise InvalidFieldError("schedule_time", value, "'HH:MM' from 00:00 to 23:59")
    return value


def schedule_day(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 6:
        raise InvalidFieldError("schedule_day", value, WEEKDAYS_HELP)
    return value


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


def timezone(value: object) -> str:
    """An IANA zone name; looked up in the zone list, never opened as a path ("America" is a directory)."""
    if not isinstance(value, str) or value not in _zones():
        raise InvalidFieldError("timezone", value, "an IANA time zone name, e.g. 'UTC' or 'Europe/Madrid'")
    return value


def aware_datetime(field: str, value: object) -> datetime:
    """A datetime with a time zone: a naive one is ambiguous by hours, and cron rules are zoned."""
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidFieldError(field, value, "a datetime with a time zone, e.g. datetime.now(UTC)")
    return value


def iso_moment(field: str, value: object) -> datetime:
    """ISO 8601 text with a time zone (run config carries text) as an aware datetime."""
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidFieldError(field, value, "an ISO 8601 time with a time zone, e.g. 2026-11-01T00:00:00+00:00")
    return moment


def directory(field: str, value: object) -> Path:
    """A directory path or a `file://` URL (how a shared mount is often written); never the empty string.

    The empty string is refused rather than read as the working directory; a URL of another scheme
    (`s3://`, `nfs://`) is refused, since the registry needs a mounted filesystem, not an object store.
    """
    allowed = "a non-empty directory path, or a file:// URL of one"
    if not isinstance(value, str | Path) or not str(value).strip() or "\x00" in str(value):
        raise InvalidFieldError(field, value, allowed)
    text = str(value)
    if "://" in text:
        url = urlsplit(text)
        if url.scheme != "file" or url.netloc not in ("", "localhost") or not url.path:
            raise InvalidFieldError(field, value, allowed)
        return Path(unquote(url.path))
    return Path(value)
