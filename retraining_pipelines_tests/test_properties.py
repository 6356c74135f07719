"""Property-based tests of the boundary rules: random input raises only the documented error.

Hypothesis throws text, numbers, None, NaN, huge integers and wrong types at the job, time-range,
threshold and version parsers and at `add_job` on a real job store; anything refused must be an
`InvalidFieldError` naming the field, and must leave the store as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retraining_pipelines import InvalidFieldError, validation
from retraining_pipelines.catalog import MODEL_TYPES
from retraining_pipelines.jobstore import SCHEDULE_TYPES, JobStore, validate_job
from retraining_pipelines.versioning import bump_version, parse_version

anything = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**62, max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30), st.binary(max_size=8),
    st.lists(st.integers(), max_size=2), st.datetimes(),
)
time_ranges = st.one_of(anything, st.from_regex(r"last_[0-9]{0,5}d\s?", fullmatch=True))
clock = st.one_of(anything, st.from_regex(r"[0-9]{1,2}:[0-9]{1,2}\n?", fullmatch=True))
versions = st.one_of(anything, st.from_regex(r"[0-9]{1,8}\.[0-9]{1,3}\.[0-9]{1,3}\n?", fullmatch=True))
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(time_ranges)
def test_time_range_parses_or_names_the_field(value: object) -> None:
    try:
        seconds = validation.time_range(value)
    except InvalidFieldError as err:
        assert err.field == "time_range"
        return
    assert isinstance(value, str) and value == f"last_{seconds // 86400}d"
    assert 1 <= seconds // 86400 <= validation.MAX_TIME_RANGE_DAYS


@FAST
@given(st.one_of(anything, st.floats(min_value=-2, max_value=2)))
def test_threshold_is_a_finite_number_strictly_between_0_and_1(value: object) -> None:
    try:
        threshold = validation.drift_threshold(value)
    except InvalidFieldError as err:
        assert err.field == "drift_threshold"
        return
    assert 0 < threshold < 1 and threshold == value


@FAST
@given(versions)
def test_versions_round_trip_or_name_the_field(value: object) -> None:
    try:
        major, minor, patch = parse_version(value)  # type: ignore[arg-type]
    except InvalidFieldError as err:
        assert err.field == "version"
        return
    assert f"{major}.{minor}.{patch}" == value
    assert parse_version(bump_version(value)) == (major, minor + 1, 0)  # type: ignore[arg-type]


@FAST
@given(model_type=st.one_of(st.sampled_from(MODEL_TYPES), anything),
       schedule_type=st.one_of(st.sampled_from(SCHEDULE_TYPES), anything),
       schedule_day=st.one_of(st.integers(-2, 9), anything), schedule_time=clock,
       drift_threshold=st.one_of(st.floats(-1, 2), anything),
       min_samples=st.one_of(st.integers(-5, 10**8), anything),
       timezone=st.one_of(st.sampled_from(["UTC", "Europe/Madrid", "America", "Etc", "../x", ""]), anything),
       time_range=time_ranges)
def test_validate_job_accepts_exactly_what_it_can_store(**fields: object) -> None:
    try:
        job = validate_job(**fields)  # type: ignore[arg-type]
    except InvalidFieldError as err:
        assert err.field in fields, err
        return
    assert job.model_type in MODEL_TYPES and job.schedule_type in SCHEDULE_TYPES
    assert job.schedule_type != "weekly" or 0 <= job.schedule_day <= 6
    assert job.schedule_type == "on_drift" or validation.schedule_time(job.schedule_time)
    validation.time_range(job.time_range)
    validation.min_samples(job.min_samples)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> JobStore:
    return JobStore(tmp_path_factory.mktemp("jobs") / "jobs.sqlite")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schedule_time=clock, time_range=time_ranges, min_samples=st.one_of(st.integers(-5, 10**30), anything),
       job_id=st.one_of(st.integers(-5, 10**30), anything))
def test_a_refused_job_or_removal_leaves_the_store_unchanged(
    store: JobStore, schedule_time: object, time_range: object, min_samples: object, job_id: object
) -> None:
    before = store.list()
    try:
        store.add(validate_job("disease", "daily", schedule_time=schedule_time, min_samples=min_samples,  # type: ignore[arg-type]
                               time_range=time_range))  # type: ignore[arg-type]
    except InvalidFieldError:
        assert store.list() == before
    else:
        assert len(store.list()) == len(before) + 1
    before = store.list()
    known = {j.job_id for j in before}
    try:
        store.remove(job_id)  # type: ignore[arg-type]
    except InvalidFieldError as err:
        assert err.field == "job_id" and store.list() == before
    else:
        assert job_id in known and len(store.list()) == len(before) - 1


def test_the_property_tests_exercise_both_outcomes(tmp_path: Path) -> None:
    """Guard against a strategy that only ever produces refusals (the properties would then prove nothing)."""
    assert validate_job("disease", "weekly", schedule_day=3, schedule_time="23:59", time_range="last_3650d")
    with pytest.raises(InvalidFieldError):
        validate_job("disease", "weekly", schedule_day=3, schedule_time="24:00")
