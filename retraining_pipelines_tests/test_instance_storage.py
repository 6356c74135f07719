"""The embedded default's event log and run storage keep their connections (instance_storage.py): real
processes, real files.

What pooling could break, each tried for real: another process's writes must be seen through
connections opened before them; a process SIGKILLed mid-run must leave every database whole and
writable; two runs racing in two processes must both be recorded in full; a forked child must not use
its parent's connections; a web server reading many runs must not keep every file open; a wipe must
not leave a connection writing into a deleted file. A new run's database, copied from a template,
must be the one Dagster creates, and processes creating it at once must all write into one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster.version import __version__ as dagster_version

from retraining_pipelines import AutomatedRetrainingService
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.instance_storage import RUN_SHARDS_KEPT, PooledSqliteEventLogStorage, PooledSqliteRunStorage
from retraining_pipelines.jobstore import JobStore
from retraining_pipelines.runs import PARTITION_TAG

from .conftest import EMBEDDED_STORAGE
from .retrain_worker import start

RETRAIN_STEPS = ("training_samples", "engineered_features", "trained_model", "validation_metrics")


@pytest.fixture
def instance_home(isolated_dagster_home: Path) -> Path:
    """DAGSTER_HOME with the committed storage section only (no daemon queue: the Python API runs here)."""
    (isolated_dagster_home / "dagster.yaml").write_text(
        yaml.safe_dump({"storage": EMBEDDED_STORAGE, "telemetry": {"enabled": False}}))
    return isolated_dagster_home


@contextmanager
def _instance(home: Path) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        assert isinstance(instance.run_storage, PooledSqliteRunStorage)
        yield instance


def _finish(worker: subprocess.Popen) -> None:
    _, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err[-3000:]


def _materializations(instance: dg.DagsterInstance, asset: str) -> list[dg.EventLogRecord]:
    return list(instance.fetch_materializations(dg.AssetKey(asset), limit=100).records)


def _databases_whole(home: Path) -> None:
    databases = sorted((home / "history" / "runs").glob("*.db"))
    assert databases, "no event log databases"
    for path in databases:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",), path


def _open_event_log_files(home: Path) -> list[str]:
    """What this process holds open of `home`'s event log databases, from /proc (not from our bookkeeping)."""
    fd_dir = Path("/proc/self/fd")
    targets = []
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(home / "history" / "runs") + os.sep) and ".db" in target:  # not runs.db
            targets.append(target)
    return targets


def test_another_processs_retrain_is_read_through_connections_opened_before_it(
    instance_home: Path, plant_db_url: str
) -> None:
    with _instance(instance_home) as instance:
        assert _materializations(instance, "trained_model") == []  # the index connection is now open and pooled
        assert instance.get_runs() == [] and instance.run_storage._pooled is not None  # runs.db's too
        _finish(start(instance_home, plant_db_url, "disease"))

        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        [record] = _materializations(instance, "trained_model")
        assert record.run_id == run.run_id and record.partition_key == "disease"
        logged = {e.dagster_event.event_type for e in instance.all_logs(run.run_id) if e.dagster_event}
        assert {dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.ASSET_CHECK_EVALUATION} <= logged


def test_two_runs_racing_in_two_processes_are_both_recorded_in_full(
    instance_home: Path, plant_db_url: str
) -> None:
    with _instance(instance_home) as instance:
        workers = [start(instance_home, plant_db_url, m) for m in ("disease", "growth_stage")]
        while any(w.poll() is None for w in workers):  # this process reads while both write
            _materializations(instance, "trained_model")
            for run in instance.get_runs():  # and writes runs.db as they do (as the UI tags a run)
                instance.add_run_tags(run.run_id, {"watched": "yes"})
            time.sleep(0.05)
        for worker in workers:
            _finish(worker)

        runs = instance.get_runs()
        assert sorted(r.tags[PARTITION_TAG] for r in runs) == ["disease", "growth_stage"]
        for run in runs:
            assert run.status == dg.DagsterRunStatus.SUCCESS and run.tags["watched"] == "yes"
            steps = [e.step_key for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)]
            assert sorted(steps) == sorted(RETRAIN_STEPS)
        for asset in RETRAIN_STEPS:
            assert sorted(r.partition_key for r in _materializations(instance, asset)) == ["disease", "growth_stage"]
        _databases_whole(instance_home)


def test_a_run_sigkilled_while_writing_events_leaves_every_database_whole_and_writable(
    instance_home: Path, plant_db_url: str, plant_store: PlantDataStore
) -> None:
    with _instance(instance_home) as instance:
        worker = start(instance_home, plant_db_url, "disease")
        deadline = time.monotonic() + 120
        killed_run = None
        while time.monotonic() < deadline and killed_run is None:
            assert worker.poll() is None, worker.communicate()
            for run in instance.get_runs():  # mid-run: started (its planned events come before) and in a step
                if run.status == dg.DagsterRunStatus.STARTED and instance.all_logs(
                        run.run_id, of_type=dg.DagsterEventType.STEP_START):
                    killed_run = run
            time.sleep(0.01)
        assert killed_run is not None, "the run never got going"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        before = [e.message for e in instance.all_logs(killed_run.run_id)]
        assert len(before) >= 12

        service = AutomatedRetrainingService(instance=instance, plant_store=plant_store,
                                             job_store=JobStore(instance_home / "jobs.sqlite"))
        result = service.retrain_model("growth_stage", force=True)
        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
        assert [r.partition_key for r in _materializations(instance, "validation_metrics")] == ["growth_stage"]
        after = [e.message for e in instance.all_logs(killed_run.run_id)]
        assert after[: len(before)] == before  # what the killed run wrote is still there, in order
        # and the service's run health recorded its end in the same log (SIGKILL left it STARTED)
        assert instance.get_run_by_id(killed_run.run_id).status == dg.DagsterRunStatus.FAILURE
        _databases_whole(instance_home)


def test_a_forked_child_connects_anew_and_both_keep_writing(instance_home: Path) -> None:
    with _instance(instance_home) as instance:
        probe = dg.AssetKey("fork_probe")
        instance.report_runless_asset_event(dg.AssetMaterialization(probe, metadata={"by": "parent"}))
        parent_files = _open_event_log_files(instance_home)
        assert parent_files, "the parent keeps its connections"
        run_id = dg.materialize([tiny], instance=instance).run_id
        assert instance.run_storage._pooled is not None, "and its runs.db engine"

        pid = os.fork()
        if pid == 0:  # the child: nothing of the parent's may be used, and writing must work
            code = 1
            try:
                storage = instance.event_log_storage
                inherited = list(storage._engines)  # the pool the fork left behind
                inherited_runs = instance.run_storage._pooled
                instance.report_runless_asset_event(dg.AssetMaterialization(probe, metadata={"by": "child"}))
                instance.add_run_tags(run_id, {"by": "child"})
                code = 0 if not inherited and inherited_runs is None else 2
            finally:
                os._exit(code)
        deadline = time.monotonic() + 120
        while (ended := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if ended[0] == 0:  # still running: a lock the fork left held; never hang the suite on it
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        status = ended[1]
        assert os.waitstatus_to_exitcode(status) == 0, "the child reused its parent's connections or could not write"

        instance.report_runless_asset_event(dg.AssetMaterialization(probe, metadata={"by": "parent again"}))
        assert instance.get_run_by_id(run_id).tags["by"] == "child"
        instance.add_run_tags(run_id, {"then": "parent"})
        assert instance.get_run_by_id(run_id).tags["then"] == "parent"
        records = instance.fetch_materializations(probe, limit=10).records
        by = [r.asset_materialization.metadata["by"].value for r in records]
        assert sorted(by) == ["child", "parent", "parent again"]
        _databases_whole(instance_home)


@dg.asset
def tiny() -> int:
    return 1


def test_reading_many_runs_keeps_only_a_few_files_open_and_a_wipe_leaves_none_deleted(
    instance_home: Path,
) -> None:
    with _instance(instance_home) as instance:
        runs = [dg.materialize([tiny], instance=instance).run_id for _ in range(RUN_SHARDS_KEPT + 4)]
        for run_id in runs:  # as the web UI does when a user scrolls through the runs
            assert instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)
        open_databases = {f for f in _open_event_log_files(instance_home) if f.endswith(".db")}
        assert len(open_databases) <= RUN_SHARDS_KEPT + 1, open_databases  # + the index
        assert any(f.endswith("/index.db") for f in open_databases)

        instance.wipe()
        still_open = _open_event_log_files(instance_home)
        assert not any(f.endswith("(deleted)") for f in still_open), still_open
        assert dg.materialize([tiny], instance=instance).success
        assert len(instance.get_runs()) == 1
        _databases_whole(instance_home)


def test_the_runs_storage_never_makes_a_caller_wait_and_keeps_two_connections(tmp_path: Path) -> None:
    """Dagster opened a connection per statement, so nested and concurrent callers never waited for one;
    with the pool they still do not, only two stay open once they are done, and the files SQLite keeps
    for reuse (it defers closing a file other connections of the process still lock) do not grow."""
    storage = PooledSqliteRunStorage.from_local(str(tmp_path))
    runs_db = str(tmp_path / "runs.db")
    held = []
    for _ in range(3):
        with contextlib.ExitStack() as stack:
            connections = [stack.enter_context(storage.connect()) for _ in range(12)]
            assert [c.exec_driver_sql("SELECT count(*) FROM runs").scalar() for c in connections] == [0] * 12
        assert storage._pooled.pool.checkedin() == 2
        held.append(len([fd for fd in Path("/proc/self/fd").iterdir() if _target(fd) == runs_db]))
    assert held[0] <= 12 and held == [held[0]] * 3, held
    storage.dispose()
    assert not [fd for fd in Path("/proc/self/fd").iterdir() if _target(fd) == runs_db]


def test_the_runs_storage_serves_threads_from_one_pool(tmp_path: Path) -> None:
    """The web server answers GraphQL on threads: a connection one thread returned serves another."""
    storage = PooledSqliteRunStorage.from_local(str(tmp_path))
    errors: list[str] = []

    def reads() -> None:
        try:
            for _ in range(30):
                with storage.connect() as conn:
                    conn.exec_driver_sql("SELECT count(*) FROM runs").scalar()
        except Exception as err:  # every thread's failure is the test's
            errors.append(repr(err))

    threads = [threading.Thread(target=reads) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and storage._pooled.pool.checkedin() == 2
    storage.dispose()


def _target(fd: Path) -> str | None:
    try:
        return os.readlink(fd)
    except OSError:
        return None


def test_a_home_written_by_dagsters_own_storage_is_read_and_extended_as_it_is(instance_home: Path) -> None:
    """Switching `dagster.yaml` to the pooled storage (as an existing dagster_home/ does on upgrade)."""
    config = instance_home / "dagster.yaml"
    ours = config.read_text()
    config.write_text(yaml.safe_dump({"storage": {"sqlite": {"base_dir": str(instance_home)}},
                                      "telemetry": {"enabled": False}}))
    with dg.DagsterInstance.from_config(str(instance_home)) as dagsters:
        assert not isinstance(dagsters.event_log_storage, PooledSqliteEventLogStorage)
        before = dg.materialize([tiny], instance=dagsters).run_id
    config.write_text(ours)
    with _instance(instance_home) as instance:
        assert instance.get_run_by_id(before).status == dg.DagsterRunStatus.SUCCESS
        assert [r.run_id for r in _materializations(instance, "tiny")] == [before]
        after = dg.materialize([tiny], instance=instance).run_id
        assert [r.run_id for r in _materializations(instance, "tiny")] == [after, before]
        _databases_whole(instance_home)


def _schema(path: Path) -> tuple[list, list, str]:
    with sqlite3.connect(path) as conn:
        tables = sorted(conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall())
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    return tables, revision, journal


def test_a_new_runs_database_is_the_one_dagster_creates(tmp_path: Path) -> None:
    """Copied from the template, a run's database has Dagster's schema, revision stamp and WAL mode."""
    dagsters = SqliteEventLogStorage(str(tmp_path / "dagster"))
    ours = PooledSqliteEventLogStorage(str(tmp_path / "ours"))
    for storage in (dagsters, ours):
        storage.store_event(_entry("run1", "first"))
        storage.store_event(_entry("run2", "second"))
    assert _schema(tmp_path / "ours" / "run1.db") == _schema(tmp_path / "dagster" / "run1.db")
    mode = stat.S_IMODE((tmp_path / "dagster" / "run1.db").stat().st_mode)
    assert stat.S_IMODE((tmp_path / "ours" / "run1.db").stat().st_mode) == mode  # readable by whom SQLite allows
    [template] = [p for p in (tmp_path / "ours").iterdir() if p.name.startswith(".run-template-dagster-")]
    assert "dagster-" + dagster_version in template.name  # an upgrade builds its own
    assert sorted(ours.get_all_run_ids()) == ["run1", "run2"]  # never taken for a run
    assert [e.user_message for e in ours.get_logs_for_run("run2")] == ["second"]
    assert sorted(p.name for p in (tmp_path / "ours").iterdir() if p.name.startswith(".run-template-")) == [
        template.name]  # no temporary file left
    ours.wipe()
    ours.store_event(_entry("run3", "after a wipe"))
    assert ours.get_all_run_ids() == ["run3"]
    assert _schema(tmp_path / "ours" / "run3.db") == _schema(tmp_path / "dagster" / "run1.db")
    ours.dispose()
    dagsters.dispose()


def test_a_table_found_is_remembered_and_a_missing_one_asked_again(tmp_path: Path) -> None:
    """`has_table` answers as Dagster's does; once a table is found it opens no connection for it
    again (Dagster asks before every asset-check event), and a table it did not find is looked for anew."""
    dagsters = SqliteEventLogStorage(str(tmp_path / "dagster"))
    ours = PooledSqliteEventLogStorage(str(tmp_path / "ours"))
    names = ("asset_check_executions", "asset_event_tags", "dynamic_partitions", "concurrency_slots", "pending_steps",
             "asset_keys", "not_a_dagster_table")
    assert [ours.has_table(n) for n in names] == [dagsters.has_table(n) for n in names] == [True] * 6 + [False]
    opened: list[object] = []

    def listener(*_: object) -> None:  # every engine's new connections
        opened.append(1)

    sa.event.listen(sa.engine.Engine, "connect", listener)
    try:
        assert ours.has_table("asset_check_executions")
        assert not opened
        assert not ours.has_table("not_a_dagster_table")
        assert opened  # a missing table is asked again, not remembered
    finally:
        sa.event.remove(sa.engine.Engine, "connect", listener)
    with sqlite3.connect(tmp_path / "ours" / "index.db") as conn:
        conn.execute("CREATE TABLE not_a_dagster_table (id INTEGER)")
    assert ours.has_table("not_a_dagster_table")
    ours.wipe()
    assert [ours.has_table(n) for n in names[:-1]] == [True] * 6
    ours.dispose()
    dagsters.dispose()


def test_processes_creating_the_same_runs_database_at_once_all_write_into_one(tmp_path: Path) -> None:
    """Six processes start writing the same new run at the same instant (its database and the template
    do not exist yet); an existing run's database is never replaced by the template."""
    base = tmp_path / "runs"
    existing = SqliteEventLogStorage(str(base))  # Dagster's own storage created this run's database
    existing.store_event(_entry("earlier", "written by Dagster's storage"))
    existing.dispose()
    go = tmp_path / "go"
    script = (
        "import sys, time, pathlib\n"
        "from retraining_pipelines_tests.test_instance_storage import _entry\n"
        "from retraining_pipelines.instance_storage import PooledSqliteEventLogStorage\n"
        "storage = PooledSqliteEventLogStorage(sys.argv[1])\n"
        "while not pathlib.Path(sys.argv[2]).exists(): time.sleep(0.001)\n"
        "for k in range(20):\n"
        "    storage.store_event(_entry('race', f'{sys.argv[3]}-{k}'))\n"
        "storage.store_event(_entry('earlier', f'{sys.argv[3]}-later'))\n")
    workers = [subprocess.Popen([sys.executable, "-c", script, str(base), str(go), str(i)],
                                stderr=subprocess.PIPE, text=True) for i in range(6)]
    time.sleep(2)  # all six imported and waiting
    go.touch()
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err[-3000:]
    storage = PooledSqliteEventLogStorage(str(base))
    written = sorted(e.user_message for e in storage.get_logs_for_run("race"))
    assert written == sorted(f"{i}-{k}" for i in range(6) for k in range(20))
    earlier = [e.user_message for e in storage.get_logs_for_run("earlier")]
    assert earlier[0] == "written by Dagster's storage" and len(earlier) == 7
    storage.dispose()
    for path in base.glob("*.db"):
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",), path
    assert not [p for p in base.iterdir() if p.suffix in (".copy", ".template")]


def _entry(run_id: str, message: str) -> EventLogEntry:
    return EventLogEntry(error_info=None, level="INFO", user_message=message, run_id=run_id,
                         timestamp=time.time())
