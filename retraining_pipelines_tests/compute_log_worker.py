"""A run executed in process with real stdout and stderr descriptors (for the compute-log tests).

Usage: python -m retraining_pipelines_tests.compute_log_worker ok|fail|hang
Reads DAGSTER_HOME. The op writes through Python and straight to the descriptors, and says which child
processes this process had meanwhile; the worker prints "after the run" once the run returned.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import dagster as dg


def children() -> list[str]:
    """Pids of this process's children, from every thread (Linux)."""
    tasks = Path(f"/proc/{os.getpid()}/task")
    return [pid for task in tasks.iterdir() for pid in (task / "children").read_text().split()]


@dg.op
def chatty() -> None:
    print("printed by Python", flush=True)
    os.write(1, b"written to descriptor 1\n")
    os.write(2, b"written to descriptor 2\n")
    print(f"children during the run: {children()}", flush=True)
    mode = sys.argv[1]
    if mode == "fail":
        raise RuntimeError("the op failed on purpose")
    if mode == "hang":
        time.sleep(600)


@dg.job
def chatty_job() -> None:
    chatty()


def main() -> None:
    with dg.DagsterInstance.get() as instance:
        result = chatty_job.execute_in_process(instance=instance, raise_on_error=False)
    print(f"after the run {result.run_id}", flush=True)


if __name__ == "__main__":
    main()
