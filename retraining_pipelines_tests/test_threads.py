"""The thread rule: a retrain's math threads are the cores divided by the retrains sharing the machine."""

from __future__ import annotations

import os

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.settings import RUNS_PER_MACHINE_ENV
from retraining_pipelines.training import cap_threads, threads_per_run
from retraining_pipelines.workers import worker_env
from retraining_pipelines_tests.helpers import metadata_of, retrain

from .conftest import project_instance

CORES = os.cpu_count() or 1


@pytest.mark.parametrize(("cores", "runs", "threads"),
                         [(2, 2, 1), (8, 2, 4), (8, 3, 2), (2, 16, 1), (4, 1, 4), (1, 0, 1)])
def test_the_rule_divides_the_cores_among_the_runs_and_never_goes_below_one(cores: int, runs: int,
                                                                              threads: int) -> None:
    assert threads_per_run(cores, runs) == threads


def _openmp_threads() -> set[int]:
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "openmp"}


@pytest.mark.parametrize(("max_runs", "runs_env", "expected"), [
    (2, None, threads_per_run(CORES, 2)),  # the embedded instance: its max_concurrent_runs share the machine
    (16, "1", CORES),  # a Celery worker alone on its machine, though the instance allows 16 runs in all
])
def test_a_retrain_caps_its_threads_by_who_shares_the_machine(
    plant_store: PlantDataStore, monkeypatch: pytest.MonkeyPatch, max_runs: int, runs_env: str | None, expected: int
) -> None:
    if runs_env:
        monkeypatch.setenv(RUNS_PER_MACHINE_ENV, runs_env)
    with threadpool_limits(limits=None), project_instance(
        overrides={"concurrency": {"runs": {"max_concurrent_runs": max_runs}}}
    ) as instance:
        result = retrain("irrigation_duration", plant_store, instance)  # a HistGradientBoosting model
        assert result.success
        assert metadata_of(result, "trained_model")["threads"] == expected
        assert _openmp_threads() == {expected}  # what scikit-learn's OpenMP really got in this process


def test_a_worker_tells_its_runs_its_concurrency_unless_told_how_many_share_the_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(RUNS_PER_MACHINE_ENV, raising=False)
    assert worker_env(2) == {RUNS_PER_MACHINE_ENV: "2"}
    monkeypatch.setenv(RUNS_PER_MACHINE_ENV, "4")  # two workers of concurrency 2 on one machine
    assert worker_env(2) == {RUNS_PER_MACHINE_ENV: "4"}


def test_the_cap_is_applied_on_every_retrain_even_when_other_code_changed_it_meanwhile() -> None:
    """`cap_threads` keeps the libraries it found, not the limit: a limit set by other code never survives it."""
    with threadpool_limits(limits=None):  # whatever this test sets is undone at its end
        cap_threads(1)
        assert _openmp_threads() == {1}
        threadpool_limits(limits=2)  # e.g. the user's own code in the same process
        assert _openmp_threads() == {2}
        cap_threads(1)
        assert _openmp_threads() == {1}
