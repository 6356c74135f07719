"""The scaled-out deployment against real servers: PostgreSQL for the Dagster instance, the plant data
and the registry index; Celery workers on Redis executing the retrains.

On a machine without the servers these tests are skipped and say why; under CI=true they must run
(a skip there would hide a broken deployment). Each test gets a database of its own, created and
dropped here, and Redis databases of its own for the broker and results.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from retraining_pipelines import AutomatedRetrainingService, settings
from retraining_pipelines.catalog import MODEL_TYPES
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.errors import InvalidFieldError
from retraining_pipelines.generator import PlantData
from retraining_pipelines.io_manager import ModelRegistryResource
from retraining_pipelines.jobstore import validate_job
from retraining_pipelines.registry import SERVING_EVENTS, ModelRegistry, ModelStatus
from retraining_pipelines.runs import CELERY_TASK_TAG, HOST_TAG, PID_TAG
from retraining_pipelines.settings import (
    CELERY_BACKEND_ENV,
    CELERY_BROKER_ENV,
    DATABASE_URL_ENV,
    SCALED_OUT_DAGSTER_HOME,
)
from retraining_pipelines_tests import live
from retraining_pipelines_tests.servers import REDIS_URL, unavailable

MODEL_TYPE = "disease"


@pytest.fixture
def celery_urls() -> tuple[str, str]:
    """Broker and result backend in two Redis databases of this test's own, emptied first."""
    import redis

    first = random.randrange(2, 15, 2)
    urls = (f"{REDIS_URL}/{first}", f"{REDIS_URL}/{first + 1}")
    try:
        for url in urls:
            redis.Redis.from_url(url).flushdb()
    except redis.RedisError as err:
        unavailable("Redis", err)
    return urls


def scaled_out(tmp_path: Path, database: str, celery: tuple[str, str] | None = None) -> dict[str, str]:
    """The environment of one machine of the deployment: `deploy/postgres-celery`, the shared artifact dir."""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(SCALED_OUT_DAGSTER_HOME / "dagster.yaml", home / "dagster.yaml")
    env = {"DAGSTER_HOME": str(home), DATABASE_URL_ENV: database,
           "MODEL_REGISTRY_DIR": str(tmp_path / "shared" / "model_registry")}
    if celery:
        env[CELERY_BROKER_ENV], env[CELERY_BACKEND_ENV] = celery
    return env


def scalar(url: str, sql: str, **params: object) -> object:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()
    finally:
        engine.dispose()


def test_one_setting_moves_every_store_and_the_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`RETRAINING_DATABASE_URL` alone (a bare URL, as users write it) selects the scaled-out deployment."""
    monkeypatch.delenv("DAGSTER_HOME")
    monkeypatch.setenv(DATABASE_URL_ENV, "postgresql://retraining@db-host:5432/growers")
    url = "postgresql+psycopg2://retraining@db-host:5432/growers"  # the driver that is installed
    assert settings.shared_database_url() == settings.plant_database_url() == url
    assert settings.dagster_home() == SCALED_OUT_DAGSTER_HOME
    assert settings.export_for_dagster() == SCALED_OUT_DAGSTER_HOME  # what serve/worker hand to Dagster
    assert os.environ["DAGSTER_HOME"] == str(SCALED_OUT_DAGSTER_HOME) and os.environ[DATABASE_URL_ENV] == url
    monkeypatch.delenv(DATABASE_URL_ENV)
    monkeypatch.delenv("DAGSTER_HOME")
    assert settings.dagster_home() == settings.PROJECT_DAGSTER_HOME  # unset: the embedded default
    assert settings.plant_database_url().startswith("sqlite:///")


def test_every_model_type_retrains_with_instance_data_and_registry_on_postgres(
    tmp_path: Path, database: str, plant_data: PlantData, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in scaled_out(tmp_path, database).items():
        monkeypatch.setenv(key, value)
    store = PlantDataStore()
    assert store.engine.dialect.name == "postgresql"
    store.write_frames(plant_data.tables())
    instance = dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"])
    service = AutomatedRetrainingService(instance=instance)

    results = {model_type: service.retrain_model(model_type, force=True) for model_type in MODEL_TYPES}

    registry = service.registry
    assert registry.index_url.startswith("postgresql")
    for model_type, result in results.items():
        assert result.promoted, (model_type, result.reason)  # a first version that beats its baseline
        assert registry.get_active_version(model_type) == result.new_version == "1.0.0"
        registry.verify(model_type, result.new_version)  # the artifact in the shared dir matches the index
    # all of it really lives in PostgreSQL: Dagster's runs, the registry's schema, the plant tables
    assert scalar(database, "SELECT count(*) FROM runs WHERE status = 'SUCCESS'") == len(MODEL_TYPES)
    assert scalar(database, "SELECT count(*) FROM model_registry.versions WHERE status = 'active'") == len(MODEL_TYPES)
    promotions = "SELECT count(*) FROM model_registry.audit_log WHERE event = 'promoted'"
    assert scalar(database, promotions) == len(MODEL_TYPES)
    assert scalar(database, "SELECT count(*) FROM sensor_readings") == len(plant_data.tables()["sensor_readings"])
    job_id = service.jobs.add(validate_job(MODEL_TYPE, "daily", schedule_time="02:00"))  # the job store too
    assert scalar(database, "SELECT model_type FROM retraining_jobs.jobs WHERE job_id = :id", id=job_id) == MODEL_TYPE
    with pytest.raises(sa.exc.InternalError, match="append-only"):
        scalar(database, "DELETE FROM model_registry.audit_log")


def test_two_processes_race_retrains_and_promotions_on_one_postgres_and_artifact_dir(
    tmp_path: Path, database: str, plant_data: PlantData
) -> None:
    env = scaled_out(tmp_path, database)
    PlantDataStore(database_url=database).write_frames(plant_data.tables())
    ModelRegistry(env["MODEL_REGISTRY_DIR"], index_url=database)  # the schema exists before sampling starts
    samples: list[int] = []
    stop = threading.Event()

    def sample_active_count() -> None:
        engine = sa.create_engine(database)
        with engine.connect() as conn:
            while not stop.is_set():
                samples.append(conn.execute(sa.text(
                    "SELECT count(*) FROM model_registry.versions WHERE model_type = :mt AND status = 'active'"
                ), {"mt": MODEL_TYPE}).scalar())
                conn.commit()
        engine.dispose()

    sampler = threading.Thread(target=sample_active_count)
    sampler.start()
    workers = []
    burst_at = time.time() + 15  # both processes' registration bursts start together, once both have started
    shared_as = {"machine-a": env["MODEL_REGISTRY_DIR"], "machine-b": Path(env["MODEL_REGISTRY_DIR"]).as_uri()}
    for name, seed in (("machine-a", 100), ("machine-b", 200)):
        cwd = tmp_path / name  # a working directory of its own, as on another machine
        cwd.mkdir()
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "retraining_pipelines_tests.scale_out_worker", "3", "20", str(seed), str(burst_at)],
            cwd=cwd, env={**os.environ, **env, "MODEL_REGISTRY_DIR": shared_as[name], "PYTHONPATH": str(live.ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [w.communicate(timeout=600) for w in workers]
    finally:
        stop.set()
        sampler.join()
    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    done = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]

    registry = ModelRegistry(env["MODEL_REGISTRY_DIR"], index_url=database)
    versions = registry.list_versions(MODEL_TYPE)
    mine = [v for d in done for v in d["retrained"] + d["registered"]]
    assert len(mine) == len(set(mine)) == len(versions) == 52  # every number allocated once, each reported right
    first_active = next(i for i, n in enumerate(samples) if n)
    assert len(samples) > 100 and set(samples[first_active:]) == {1}  # exactly one active once there is one
    assert sum(v.status == ModelStatus.ACTIVE for v in versions) == 1
    assert not registry.candidates()  # nothing left half-decided
    trail = registry.audit_trail(MODEL_TYPE)
    assert sorted(e.to_version for e in trail if e.event == "registered") == sorted(v.version for v in versions)
    served = [e for e in trail if e.event in SERVING_EVENTS]
    assert sorted(e.to_version for e in served) == sorted(v for d in done for v in d["promoted"])
    for before, after in itertools.pairwise(served):  # a chain: no swap lost or applied twice
        assert after.from_version == before.to_version
    assert served[-1].to_version == registry.get_active_version(MODEL_TYPE)
    for version in versions:
        if version.status != ModelStatus.PURGED:
            registry.verify(MODEL_TYPE, version.version)


def test_the_shared_artifact_directory_may_be_a_path_or_a_file_url_never_an_object_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ModelRegistry(tmp_path.as_uri()).root == ModelRegistry(tmp_path).root == tmp_path
    monkeypatch.setenv("MODEL_REGISTRY_DIR", tmp_path.as_uri())  # as a second machine may write it
    assert ModelRegistryResource().get().root == tmp_path  # not the relative path "file:/tmp/..."
    for url in ("s3://bucket/models", "file://other-host/models", "file://"):
        with pytest.raises(InvalidFieldError, match="file:// URL"):
            ModelRegistry(url)


# ---------------------------------------------------------------------------------------- Celery
def test_run_health_reads_the_task_tag_dagster_celery_writes() -> None:
    """runs.py names the tag itself (the embedded deployment has no dagster-celery); it must be the same."""
    from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

    assert CELERY_TASK_TAG == DAGSTER_CELERY_TASK_ID_TAG


def start_worker(env: dict[str, str], name: str, log_dir: Path) -> subprocess.Popen:
    """`retraining worker` in a process group of its own (so the test can kill the whole worker)."""
    log = open(log_dir / f"{name}.log", "w")  # noqa: SIM115 - the process holds it until it ends
    return subprocess.Popen([str(live.BIN / "retraining"), "worker", "--name", f"{name}-{uuid.uuid4().hex[:6]}@test"],
                            cwd=live.ROOT,
                            env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)


def test_celery_workers_run_retrains_hold_the_per_model_limit_and_survive_a_killed_worker(
    tmp_path: Path, database: str, celery_urls: tuple[str, str], plant_data: PlantData,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    env = scaled_out(tmp_path, database, celery_urls)
    for key, value in env.items():  # this process reads the same instance the daemon and workers use
        monkeypatch.setenv(key, value)
    PlantDataStore(database_url=database).write_frames(plant_data.tables())  # serve then skips the demo seed
    home = Path(env["DAGSTER_HOME"])
    instance = dg.DagsterInstance.from_config(str(home))
    registry = ModelRegistry(env["MODEL_REGISTRY_DIR"], index_url=database)
    workers: list[subprocess.Popen] = []
    try:
        workers += [start_worker(env, f"w{i}", tmp_path) for i in (1, 2)]
        with live.serving(home, env=env) as url:
            # 1. a retrain runs on a worker: recorded in the shared instance, its model registered
            first = live.launch_retrain(url, MODEL_TYPE)
            assert live.wait_for_run(url, first) == "SUCCESS", (home / "serve.log").read_text()[-3000:]
            run = instance.get_run_by_id(first)
            assert CELERY_TASK_TAG in run.tags  # executed as a Celery task ...
            worker_pids = {str(w.pid) for w in workers}
            assert run.tags[PID_TAG] not in worker_pids  # ... in a worker's pool process, not in the daemon
            assert registry.version_of_run(MODEL_TYPE, first).status == ModelStatus.ACTIVE

            # 2. two workers, three runs: the two of one model type never overlap, the other one runs beside them
            same = [live.launch_retrain(url, "growth_stage") for _ in range(2)]
            other = live.launch_retrain(url, "irrigation_timing")
            for run_id in [*same, other]:
                assert live.wait_for_run(url, run_id) == "SUCCESS"
            spans = {r.dagster_run.run_id: (r.start_time, r.end_time)
                     for r in instance.get_run_records(dg.RunsFilter(run_ids=[*same, other]))}
            (a_start, a_end), (b_start, b_end) = sorted(spans[r] for r in same)
            assert a_end <= b_start, "two retrains of one model type ran at once"
            assert spans[other][0] < max(a_end, b_end) and spans[other][1] > min(a_start, b_start)  # in parallel

            # 3. kill -9 a whole worker mid-run, as if its machine vanished: the run fails, the registry holds
            active_before = registry.get_active_version("growth_stage")
            doomed = live.launch_retrain(url, "growth_stage")
            tags = live.wait_until(lambda: PID_TAG in instance.get_run_by_id(doomed).tags
                                   and instance.get_run_by_id(doomed).tags, 120, "the retrain starting on a worker",
                                   every=0.05)
            # the worker reports another host, so only the rule for remote workers (ask Celery) can see it die
            instance.add_run_tags(doomed, {HOST_TAG: "another-machine"})
            os.killpg(os.getpgid(int(tags[PID_TAG])), signal.SIGKILL)
            failed = live.wait_until(lambda: instance.get_run_by_id(doomed).status == dg.DagsterRunStatus.FAILURE,
                                     200,
                              "the killed run being marked failed", every=2)
            assert failed
            message = [e.message for e in instance.all_logs(doomed)
                       if e.dagster_event_type == dg.DagsterEventType.RUN_FAILURE]
            assert any("no Celery worker runs its task" in m for m in message), message
            live.wait_until(lambda: not registry.candidates(), 120, "the killed run's candidate being settled",
                            every=2)
            assert registry.get_active_version("growth_stage") == active_before
            assert sum(v.status == ModelStatus.ACTIVE for v in registry.list_versions("growth_stage")) == 1
            for version in registry.list_versions("growth_stage"):
                if version.status != ModelStatus.PURGED:
                    registry.verify("growth_stage", version.version)

            # 4. the next run succeeds (on the surviving worker, or a new one)
            workers.append(start_worker(env, "w3", tmp_path))
            again = live.launch_retrain(url, "growth_stage")
            assert live.wait_for_run(url, again) == "SUCCESS"
            assert registry.version_of_run("growth_stage", again) is not None
    finally:
        stop_workers(workers)
