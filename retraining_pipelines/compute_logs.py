"""A run's stdout and stderr, kept for the UI without a process per stream to mirror them.

Dagster's `LocalComputeLogManager` captures a run's output into files the web UI reads, and mirrors
each stream back to the terminal live: for every run it starts `tail -F` on both files and, beside
each tail, a Python watcher that kills it if the run dies - four processes per run. On this 2-core
machine that was 0.05-0.11 s of a warm ~0.9 s retrain (interleaved runs, issue 11), and on a Pi each
watcher is a Python start-up of its own.

`EchoingComputeLogManager` keeps Dagster's files, paths and reading side unchanged (the UI, its live
view and `dagster` tools see the same logs), and mirrors without processes: what a run wrote is
copied to the terminal once its capture ends. The terminal sees a run's output when the run ends;
the UI sees it as it is written. A run killed mid-way leaves its output in the files and nothing
behind it, as there is nothing to orphan.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from dagster import StringSource
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager
from dagster._serdes import ConfigurableClassData

CHUNK_BYTES = 1 << 20


class EchoingComputeLogManager(LocalComputeLogManager):
    """Dagster's local compute logs under `<base_dir>/storage` (where Dagster's default keeps them), echoed
    to the terminal when a capture ends instead of tailed live."""

    def __init__(self, base_dir: str, polling_timeout: float | None = None,
                 inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(os.path.join(base_dir, "storage"), polling_timeout, inst_data)

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {**LocalComputeLogManager.config_type(), "base_dir": StringSource}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: dict) -> EchoingComputeLogManager:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Iterator[CapturedLogContext]:
        out = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        err = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        with captured(sys.stdout, out), captured(sys.stderr, err):
            yield CapturedLogContext(log_key)
        Path(self.complete_artifact_path(log_key)).touch()  # how Dagster tells a finished capture


@contextmanager
def captured(stream: IO[str], path: str) -> Iterator[None]:
    """Everything written to `stream`'s file descriptor (by Python or by C code) goes to `path` meanwhile,
    and is written to the stream once the block ends (also when it raises).

    A stream without a descriptor (a test runner's in-memory capture) is left alone, as Dagster does.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = _descriptor(stream)
    with open(path, "ab", buffering=0) as target:
        if fd is None:
            yield
            return
        start = target.tell()
        stream.flush()
        saved = os.dup(fd)
        try:
            os.dup2(target.fileno(), fd)
            try:
                yield
            finally:
                stream.flush()
                os.dup2(saved, fd)
                _echo(path, start, fd)
        finally:
            os.close(saved)


def _descriptor(stream: IO[str]) -> int | None:
    """The stream's file descriptor; None for a stream without one (pytest's capture, Celery's logging proxy)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return None
    return fd if isinstance(fd, int) else None


def _echo(path: str, start: int, fd: int) -> None:
    """Copy what was captured (from `start` on) to `fd`, in chunks: a chatty run is never held whole.

    A terminal that went away (a closed pipe) loses only this copy; the files keep everything.
    """
    try:
        with open(path, "rb") as captured_file, open(fd, "wb", closefd=False) as terminal:
            captured_file.seek(start)
            shutil.copyfileobj(captured_file, terminal, CHUNK_BYTES)
    except OSError:
        pass
