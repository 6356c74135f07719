"""On-demand measurements (never run in CI); results go to BENCHMARKS.md."""

from datetime import UTC, datetime

#: The day the measured worlds end, and the season the tests' worlds have: late autumn, the coldest
#: weeks personalized_growth meets. Pinned so a figure does not change with the day it is measured.
LATE_AUTUMN = datetime(2026, 11, 26, tzinfo=UTC)
