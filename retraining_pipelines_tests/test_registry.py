"""The model registry: versions, integrity, the one-active invariant, crashes and concurrency."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import multiprocessing
import pickle
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from joblib.numpy_pickle import NumpyUnpickler
from sklearn.ensemble import RandomForestClassifier

from retraining_pipelines import registry as registry_module
from retraining_pipelines.catalog import get_spec
from retraining_pipelines.errors import InvalidFieldError, ModelIntegrityError, RegistryError
from retraining_pipelines.registry import INDEX, INDEX_SCHEMA, ModelRegistry, ModelStatus, _TreeFreeingUnpickler

from .registry_workers import metadata, register_many, roll_back_judged, small_model


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def _register(registry: ModelRegistry, seed: int = 0, model_type: str = "disease", **meta: object) -> str:
    return registry.register_model(model_type, small_model(seed), metadata(model_type, **meta)).version


def _same_model(loaded: object, seed: int) -> bool:
    """The loaded model predicts exactly like the one registered from `small_model(seed)`."""
    probe = np.random.default_rng(123).normal(size=(200, 3))
    return bool(np.array_equal(loaded.predict(probe), small_model(seed).predict(probe)))


def _active_count(root: Path, model_type: str = "disease") -> int:
    with sqlite3.connect(root / INDEX) as conn:
        query = "SELECT count(*) FROM versions WHERE model_type = ? AND status = 'active'"
        return conn.execute(query, (model_type,)).fetchone()[0]


def test_versions_start_at_1_0_0_and_bump_minor(registry: ModelRegistry) -> None:
    assert [_register(registry, i) for i in range(3)] == ["1.0.0", "1.1.0", "1.2.0"]
    assert registry.get_latest_version("disease") == "1.2.0"
    assert registry.get_active_version("disease") is None, "registration alone never activates"
    record = registry.get_version("disease", "1.1.0")
    assert record.status == ModelStatus.CANDIDATE
    assert record.path == registry.root / "disease" / "1.1.0" / "model.joblib"
    assert record.sha256 == hashlib.sha256(record.path.read_bytes()).hexdigest()
    assert record.sklearn_version and record.numpy_version and record.python_version
    assert (record.path.parent / "metadata.json").exists()


def test_catalog_schema_change_bumps_major(registry: ModelRegistry) -> None:
    _register(registry)
    _register(registry, 1)
    spec = get_spec("disease")
    changed = dataclasses.replace(spec, features=(*spec.features, "leaf_wetness")).schema_fingerprint
    assert _register(registry, 2, schema_fingerprint=changed) == "2.0.0"
    assert _register(registry, 3, schema_fingerprint=changed) == "2.1.0"


def test_promote_swaps_atomically_and_keeps_one_active(registry: ModelRegistry) -> None:
    v1, v2 = _register(registry), _register(registry, 1)
    assert registry.promote("disease", v1, reason="first") is None
    assert registry.promote("disease", v2, reason="better") == v1
    assert registry.get_active_version("disease") == v2
    assert registry.get_version("disease", v1).status == ModelStatus.ARCHIVED
    assert registry.get_previous_version("disease") == v1
    assert _active_count(registry.root) == 1


def test_rejected_candidate_leaves_the_active_version_untouched(registry: ModelRegistry) -> None:
    v1 = _register(registry)
    registry.promote("disease", v1, reason="first")
    before = registry.get_version("disease", v1).path.read_bytes()
    v2 = _register(registry, 1)
    registry.reject("disease", v2, reason="worse")
    assert registry.get_active_version("disease") == v1
    assert registry.get_version("disease", v1).path.read_bytes() == before
    assert registry.get_previous_version("disease") is None, "a rejected version is never a rollback target"
    events = [(e.event, e.from_version, e.to_version) for e in registry.audit_trail("disease")]
    assert ("rejected", v1, v2) in events
    registry.reject("disease", v2, reason="gate re-run from the UI")
    assert len(registry.audit_trail("disease")) == len(events), "a second rejection changes nothing"
    with pytest.raises(RegistryError, match="only a candidate can be rejected"):
        registry.reject("disease", v1, reason="the active one")


def test_rollback_restores_the_previous_version_and_is_audited(registry: ModelRegistry) -> None:
    v1, v2 = _register(registry), _register(registry, 1)
    registry.promote("disease", v1, reason="first")
    registry.promote("disease", v2, reason="second", trigger="scheduled", run_id="run-2")
    assert registry.rollback("disease", reason="bad in production") == (v2, v1)
    assert registry.get_active_version("disease") == v1
    assert registry.get_version("disease", v2).status == ModelStatus.ARCHIVED
    last = registry.audit_trail("disease")[-1]
    assert (last.event, last.from_version, last.to_version, last.reason) == ("rolled_back", v2, v1, "bad in production")
    assert registry.rollback("disease", to_version=v2) == (v1, v2), "or to a named version"


def test_rollback_with_nothing_to_roll_back_changes_nothing(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="no active version"):
        registry.rollback("disease")
    v1 = _register(registry)
    registry.promote("disease", v1, reason="first")
    trail = len(registry.audit_trail())
    with pytest.raises(RegistryError, match="Nothing to roll back to"):
        registry.rollback("disease")
    with pytest.raises(InvalidFieldError, match="version"):
        registry.rollback("disease", to_version="9.9.9")
    assert registry.get_active_version("disease") == v1 and len(registry.audit_trail()) == trail


def test_the_only_served_version_cannot_be_archived(registry: ModelRegistry) -> None:
    v1 = _register(registry)
    registry.promote("disease", v1, reason="first")
    with pytest.raises(RegistryError, match="one version must be active at every instant"):
        registry.set_model_status("disease", v1, ModelStatus.ARCHIVED)
    assert registry.get_active_version("disease") == v1


def test_the_spec_rollback_recipe_hands_over_in_one_step(registry: ModelRegistry) -> None:
    """Archive the current version, then activate the old one (the spec's recipe): never zero active."""
    v1, v2 = _register(registry), _register(registry, 1)
    registry.promote("disease", v1, reason="first")
    registry.promote("disease", v2, reason="better")
    old_version = registry.get_previous_version("disease", v2)
    registry.set_model_status("disease", v2, ModelStatus.ARCHIVED)
    assert registry.get_active_version("disease") == old_version == v1, "the old version took over at once"
    assert registry.audit_trail()[-1].event == "rolled_back"
    trail = len(registry.audit_trail())
    registry.set_model_status("disease", old_version, ModelStatus.ACTIVE)  # the recipe's second call: a no-op
    assert registry.get_active_version("disease") == v1 and len(registry.audit_trail()) == trail
    assert registry.get_version("disease", v2).status == ModelStatus.ARCHIVED


def test_archiving_a_rejected_version_keeps_it_out_of_rollbacks(registry: ModelRegistry) -> None:
    v1, v2 = _register(registry), _register(registry, 1)
    registry.promote("disease", v1, reason="first")
    registry.reject("disease", v2, reason="worse")
    registry.set_model_status("disease", v2, ModelStatus.ARCHIVED)  # the spec's troubleshooting recipe
    assert registry.get_version("disease", v2).status == ModelStatus.REJECTED
    assert registry.get_active_version("disease") == v1


def test_metadata_naming_a_taken_version_registers_nothing(registry: ModelRegistry) -> None:
    from .test_bad_input import _metadata, _tiny_model

    assert registry.register_model("disease", _tiny_model(), _metadata(version="1.0.0")).version == "1.0.0"
    with pytest.raises(RegistryError, match=r"expects v1\.0\.0"):
        registry.register_model("disease", _tiny_model(), _metadata(version="1.0.0"))
    assert [v.version for v in registry.list_versions("disease")] == ["1.0.0"]
    assert sorted(p.name for p in (registry.root / "disease").iterdir()) == ["1.0.0"]


def test_the_index_itself_forbids_two_active_versions(registry: ModelRegistry) -> None:
    v1, v2 = _register(registry), _register(registry, 1)
    registry.promote("disease", v1, reason="first")
    with sqlite3.connect(registry.root / INDEX) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE versions SET status = 'active' WHERE version = ?", (v2,))


def test_audit_trail_is_append_only(registry: ModelRegistry) -> None:
    registry.promote("disease", _register(registry), reason="first")
    with sqlite3.connect(registry.root / INDEX) as conn:
        for statement in ("UPDATE audit_log SET reason = 'forged'", "DELETE FROM audit_log"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute(statement)
    assert [e.event for e in registry.audit_trail("disease")] == ["registered", "promoted"]


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "delete"])
def test_a_file_changed_after_registration_is_refused(registry: ModelRegistry, damage: str) -> None:
    v1 = _register(registry)
    registry.promote("disease", v1, reason="first")
    path = registry.get_version("disease", v1).path
    data = path.read_bytes()
    if damage == "flip_byte":
        path.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.unlink()
    with pytest.raises(ModelIntegrityError, match=r"disease v1\.0\.0"):
        registry.load_model("disease")


def test_the_gate_predicts_with_the_candidate_this_process_registered_while_its_file_verifies(
        registry: ModelRegistry) -> None:
    """`keep_warm` (the pipeline's own candidate): a gate gets that object back, unpickled once at
    most, while it is the newest candidate or the active version; `load_model` still hands every
    caller a fresh copy; a damaged file is refused either way."""
    models = [small_model(seed) for seed in range(4)]

    def register(seed: int) -> str:
        return registry.register_model("disease", models[seed], metadata(), keep_warm=True).version

    v1 = register(0)
    assert registry.load_for_prediction("disease", v1) is models[0]
    assert registry.load_model("disease", v1) is not models[0]
    registry.promote("disease", v1, reason="first")
    v2 = register(1)  # a gate compares it with v1, the active version
    assert registry.load_for_prediction("disease", v1) is models[0]
    registry.promote("disease", v2, reason="promoted: the next gate compares with v2")
    v3 = register(2)
    assert registry.load_for_prediction("disease", v2) is models[1]
    registry.reject("disease", v3, reason="rejected: the next gate compares with v2 again")
    v4 = register(3)
    assert registry.load_for_prediction("disease", v2) is models[1]
    assert registry.load_for_prediction("disease", v4) is models[3]
    reloaded = registry.load_for_prediction("disease", v1)  # neither: unpickled, takes v2's place
    assert reloaded is not models[0] and _same_model(reloaded, seed=0)
    assert registry.load_for_prediction("disease", v4) is models[3]
    assert registry.load_for_prediction("disease", v2) is not models[1]
    path = registry.get_version("disease", v4).path
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    with pytest.raises(ModelIntegrityError, match=r"disease v1\.3\.0"):
        registry.load_for_prediction("disease", v4)
    other = ModelRegistry(registry.root.parent / "another")  # another registry's v1.0.0 is not this one
    v1_other = _register(other, seed=5)
    assert _same_model(other.load_for_prediction("disease", v1_other), seed=5)


def test_a_version_larger_than_the_limit_is_loaded_each_time(registry: ModelRegistry,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_model(0)
    monkeypatch.setattr(registry_module, "WARM_MODEL_MAX_BYTES", len(pickle.dumps(model)) // 2)
    v2 = registry.register_model("disease", model, metadata(), keep_warm=True).version
    first = registry.load_for_prediction("disease", v2)
    assert first is not model and _same_model(first, seed=0)
    assert registry.load_for_prediction("disease", v2) is not first


def test_a_tampered_version_can_never_become_active(registry: ModelRegistry) -> None:
    v1, v2, v3 = _register(registry), _register(registry, 1), _register(registry, 2)
    registry.promote("disease", v1, reason="first")
    registry.promote("disease", v2, reason="second")
    registry.rollback("disease")  # v2 is archived now: a legitimate rollback target, once served
    for version in (v2, v3):
        path = registry.get_version("disease", version).path
        path.write_bytes(path.read_bytes() + b"evil")
    with pytest.raises(ModelIntegrityError):
        registry.promote("disease", v3, reason="should not happen")
    with pytest.raises(ModelIntegrityError):
        registry.rollback("disease", to_version=v2)
    assert registry.get_active_version("disease") == v1


def test_a_forest_loads_whole_without_holding_its_trees_arrays_twice(registry: ModelRegistry) -> None:
    """Each tree copies its arrays when built; joblib's own unpickler keeps them all until the load
    ends (a forest took twice its size to load), ours lets each go once its tree has them."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 3))
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, (X[:, 0] + X[:, 1] > 0).astype(int))
    record = registry.register_model("disease", forest, metadata())
    loaded = registry.load_model("disease", record.version)
    assert np.array_equal(loaded.predict_proba(X), forest.predict_proba(X))

    def tree_states_held(unpickler: type[NumpyUnpickler]) -> int:
        with open(record.path, "rb") as fh:
            reading = unpickler(str(record.path), fh, ensure_native_byte_order=True)
            assert np.array_equal(reading.load().predict(X), forest.predict(X))
        return sum(isinstance(obj, dict) and "nodes" in obj for obj in reading.memo.values())

    assert tree_states_held(NumpyUnpickler) == 5, "joblib's unpickler keeps every tree's state"
    assert tree_states_held(_TreeFreeingUnpickler) == 0


def test_scikit_learn_version_mismatch_is_reported_not_ignored(registry: ModelRegistry) -> None:
    v1 = _register(registry)
    with sqlite3.connect(registry.root / INDEX) as conn:
        conn.execute("UPDATE versions SET sklearn_version = '0.24.2' WHERE version = ?", (v1,))
    with pytest.raises(ModelIntegrityError, match=r"scikit-learn 0\.24\.2"):
        registry.load_model("disease", v1)
    assert _same_model(registry.load_model("disease", v1, allow_version_mismatch=True), seed=0)


@pytest.mark.parametrize("bad", ["../../etc", "tomato", "", "disease/../../x"])
def test_bad_model_types_are_refused_and_nothing_is_written(registry: ModelRegistry, bad: str, tmp_path: Path) -> None:
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(InvalidFieldError, match="model_type"):
        registry.register_model(bad, small_model(), metadata())
    for call in (registry.get_active_version, registry.list_versions, registry.rollback):
        with pytest.raises(InvalidFieldError, match="model_type"):
            call(bad)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_bad_status_version_and_trigger_change_nothing(registry: ModelRegistry) -> None:
    v1 = _register(registry)
    trail = len(registry.audit_trail())
    with pytest.raises(InvalidFieldError, match="status"):
        registry.set_model_status("disease", v1, "deployed")
    with pytest.raises(InvalidFieldError, match="version"):
        registry.set_model_status("disease", "1.0", ModelStatus.ACTIVE)
    with pytest.raises(InvalidFieldError, match="trigger"):
        registry.promote("disease", v1, reason="x", trigger="cosmic_ray")
    with pytest.raises(InvalidFieldError, match="trigger"):
        registry.register_model("disease", small_model(), metadata(trigger="cosmic_ray"))
    with pytest.raises(InvalidFieldError, match=r"metadata\.model_type"):
        registry.register_model("disease", small_model(), metadata("growth_stage"))
    assert registry.get_active_version("disease") is None
    assert len(registry.audit_trail()) == trail and registry.get_latest_version("disease") == v1


def test_retention_keeps_the_newest_archived_and_never_active_or_previous(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "r", keep_archived=2)
    versions = [_register(registry, i) for i in range(6)]
    for v in versions:
        registry.promote("disease", v, reason="next")
    statuses = {r.version: r.status for r in registry.list_versions("disease")}
    assert statuses["1.5.0"] == ModelStatus.ACTIVE
    assert [v for v, s in statuses.items() if s == ModelStatus.ARCHIVED] == ["1.4.0", "1.3.0", "1.2.0"]
    assert [v for v, s in statuses.items() if s == ModelStatus.PURGED] == ["1.1.0", "1.0.0"]
    assert not (tmp_path / "r" / "disease" / "1.0.0").exists()
    assert registry.rollback("disease") == ("1.5.0", "1.4.0")
    with pytest.raises(RegistryError, match="purged"):
        registry.load_model("disease", "1.0.0")


def test_concurrent_threads_get_unique_versions_and_never_two_active(registry: ModelRegistry) -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        versions = list(pool.map(lambda i: _register(registry, i), range(12)))
    assert sorted(versions) == sorted(f"1.{i}.0" for i in range(12))
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(_active_count(registry.root))

    watcher = threading.Thread(target=watch)
    watcher.start()
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda v: registry.promote("disease", v, reason="race"), versions))
    stop.set()
    watcher.join()
    assert max(seen) == 1 and _active_count(registry.root) == 1
    assert seen[seen.index(1):].count(0) == 0, "once a version is active, one always is"


def test_concurrent_processes_get_unique_versions_and_one_active(tmp_path: Path) -> None:
    root = str(tmp_path / "registry")
    ModelRegistry(root)
    with ProcessPoolExecutor(max_workers=3, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(register_many, [root] * 3, [4] * 3, [0, 100, 200]))
    versions = [v for chunk in results for v in chunk]
    assert len(versions) == len(set(versions)) == 12
    registry = ModelRegistry(root)
    assert {r.version for r in registry.list_versions("disease")} == set(versions)
    assert _active_count(Path(root)) == 1
    promotions = [e for e in registry.audit_trail("disease") if e.event == "promoted"]
    assert len(promotions) == 12 and promotions[-1].to_version == registry.get_active_version("disease")


def test_live_rollbacks_racing_promotions_in_other_processes_never_undo_an_unseen_promotion(tmp_path: Path) -> None:
    """The drift policy rolls back the version it judged, never a newer one promoted in between: real
    processes promote while others roll back with the compare-and-swap; the audit trail shows every
    rollback left the very version it judged, and one version stayed active throughout."""
    root = str(tmp_path / "registry")
    registry = ModelRegistry(root)
    for seed in (1, 2):
        registry.promote("disease", registry.register_model("disease", small_model(seed), metadata()).version,
                         reason="setup")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=context) as pool:
        promoting = [pool.submit(register_many, root, 8, seed) for seed in (10, 100)]
        rolling = [pool.submit(roll_back_judged, root, 40) for _ in range(2)]
        [f.result() for f in promoting]
        rollbacks = sum(f.result() for f in rolling)
    trail = [e for e in ModelRegistry(root).audit_trail("disease") if e.event in ("promoted", "rolled_back")]
    done = [e for e in trail if e.event == "rolled_back"]
    assert len(done) == rollbacks > 0
    assert all(e.reason.endswith(f"judged {e.from_version}") for e in done), [(e.from_version, e.reason) for e in done]
    for before, after in itertools.pairwise(trail):  # an unbroken chain: nothing changed unseen
        assert after.from_version == before.to_version, (before, after)
    assert _active_count(Path(root)) == 1


def test_a_fresh_index_locked_by_another_process_is_waited_for_not_refused(tmp_path: Path) -> None:
    """Another process holds the new index file's write lock before its journal is WAL (as a retrain
    creating the same fresh registry does): SQLite refuses the switch to WAL at once, without its busy
    timeout. The registry must wait for the other transaction, as for any lock, and then open."""
    root = tmp_path / "registry"
    root.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         f"c = sqlite3.connect({str(root / INDEX)!r}, isolation_level=None)\n"
         "c.execute('BEGIN IMMEDIATE'); c.execute('CREATE TABLE other_process (x)')\n"
         "print('locked', flush=True); time.sleep(1.5)\n"
         "print(time.time(), flush=True); c.execute('COMMIT'); time.sleep(1)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        registry = ModelRegistry(root)  # refused at once with "database is locked" before the fix
        opened = time.time()
        # the holder prints the moment before it commits: the registry opened after it, whatever the
        # load (its process may still be running long after the commit, so that is not the question)
        assert float(holder.stdout.readline()) <= opened, "the registry opened while the other process held the lock"
    finally:
        holder.wait(timeout=30)
    assert holder.returncode == 0
    assert registry.list_versions("disease") == []
    with sqlite3.connect(root / INDEX) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.parametrize("crash_point", ["while_staging", "after_rename"])
def test_a_process_killed_mid_registration_leaves_a_consistent_registry(tmp_path: Path, crash_point: str) -> None:
    root = tmp_path / "registry"
    registry = ModelRegistry(root)
    v1 = _register(registry)
    registry.promote("disease", v1, reason="first")
    child = subprocess.run(
        [sys.executable, "-m", "retraining_pipelines_tests.registry_workers", str(root), crash_point],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, timeout=120,
    )
    assert child.returncode == -9, child.stderr.decode()[-2000:]
    after = ModelRegistry(root)
    assert after.get_active_version("disease") == v1
    assert [r.version for r in after.list_versions("disease")] == [v1], "no half-written version visible"
    assert _same_model(after.load_model("disease"), seed=0)
    assert _register(after, 5) == "1.1.0", "the crashed number is reused cleanly"
    assert _same_model(after.load_model("disease", "1.1.0"), seed=5)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_index_from_before_the_split_facts_gets_them_and_keeps_its_versions(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """A version records how its gate split its rows (`recent_from_ts`) and whether it learned its
    hold-out since (`learned_holdout`). An index written before those columns existed gains them when
    a registry opens it - on SQLite and on PostgreSQL - and its versions read as "whole window, not
    refitted"."""
    url = request.getfixturevalue("database") if backend == "postgresql" else None
    first = ModelRegistry(tmp_path / "registry", index_url=url)
    old = _register(first)
    table = "versions" if url is None else f"{INDEX_SCHEMA}.versions"
    engine = sa.create_engine(first.index_url)
    with engine.begin() as conn:  # the index as the previous release left it
        for column in ("recent_from_ts", "learned_holdout"):
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
    reopened = ModelRegistry(tmp_path / "registry", index_url=url)
    record = reopened.get_version("disease", old)
    assert record.recent_from_ts is None and record.learned_holdout is False
    new = _register(reopened, seed=1, recent_from_ts=1_790_000_000, learned_holdout=True)
    record = reopened.get_version("disease", new)
    assert record.recent_from_ts == 1_790_000_000 and record.learned_holdout is True
    engine.dispose()


def test_split_facts_that_are_not_a_moment_or_a_flag_register_nothing(registry: ModelRegistry) -> None:
    for bad in ({"recent_from_ts": -1}, {"recent_from_ts": "yesterday"}, {"learned_holdout": "yes"}):
        with pytest.raises(InvalidFieldError, match=next(iter(bad))):
            _register(registry, **bad)
    assert registry.list_versions() == []
