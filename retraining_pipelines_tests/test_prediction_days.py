"""The prediction log's daily tally (`prediction_days`), kept by the database's own triggers.

Whatever the plant app does to the log - insert predictions with or without outcomes, fill in or
correct outcomes, move or delete rows, roll a transaction back, race another writer, die inside a
transaction - the tally must equal a recount of the log by the catalog's rule, on SQLite and on
PostgreSQL, and the drift check must read the same evidence from it as from the log.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from retraining_pipelines import plantdb, prediction_days
from retraining_pipelines.catalog import get_spec
from retraining_pipelines.plantdb import DAY, PlantDatabase, Window, predictions
from retraining_pipelines_tests.log_writer import rows

WRITER = [sys.executable, "-m", "retraining_pipelines_tests.log_writer"]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'plant.sqlite'}"
    return request.getfixturevalue("database")


def is_hit(model_type: str, prediction: str, actual: str) -> bool:
    """The catalog's `accuracy` for one logged prediction, in Python: a regressor's text that is no
    finite number is wrong."""
    tolerance = get_spec(model_type).accuracy_tolerance
    if tolerance is None:
        return prediction == actual
    try:
        error = abs(float(prediction) - float(actual))
    except ValueError:
        return False
    return math.isfinite(error) and error <= tolerance


def recount(engine: sa.Engine) -> dict[tuple[str, str, int], tuple[int, int]]:
    """(model type, version, UTC day) -> (labelled, right), from the log itself."""
    p = predictions.c
    with engine.connect() as conn:
        logged = conn.execute(sa.select(p.model_type, p.model_version, p.ts, p.prediction, p.actual)
                              .where(p.actual.is_not(None))).all()
    labelled, right = Counter(), Counter()
    for kind, version, ts, prediction, actual in logged:
        key = (kind, version, int(ts) // DAY * DAY)
        labelled[key] += 1
        right[key] += is_hit(kind, prediction, actual)
    return {key: (n, right[key]) for key, n in labelled.items()}


def tally(engine: sa.Engine) -> dict[tuple[str, str, int], tuple[int, int]]:
    t = plantdb.prediction_tallies.c
    with engine.connect() as conn:
        found = conn.execute(sa.select(t.model_type, t.model_version, t.day_ts, t.labelled, t.hits)).all()
    return {(k, v, int(d)): (n, h) for k, v, d, n, h in found if n or h}


def triggers(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return prediction_days._installed(conn)


def as_before_the_tally(engine: sa.Engine) -> None:
    """The database as an earlier release left it: the log without triggers, the tally empty."""
    names, on = triggers(engine), "" if engine.dialect.name == "sqlite" else " ON predictions"
    with engine.begin() as conn:
        for name in names:
            conn.exec_driver_sql(f"DROP TRIGGER {name}{on}")
        conn.exec_driver_sql("DELETE FROM prediction_days")


def test_the_tally_equals_a_recount_after_anything_the_app_does_to_the_log(url: str) -> None:
    engine = PlantDatabase(url).engine
    rng = np.random.default_rng(3)
    p = predictions.c
    junk = [{"model_type": "personalized_growth", "model_version": "1.0.0", "ts": 1_700_000_000 + i, "unit_id": 1,
             "prediction": bad, "actual": "0.1"} for i, bad in enumerate(["abc", "", "NaN", "inf", "0.0"])]
    with engine.begin() as conn:
        conn.execute(predictions.insert(), rows(rng, 1, 400) + junk)
    assert tally(engine) == recount(engine)
    with engine.begin() as conn:  # outcomes arrive, one is corrected, rows move day or version, some go
        conn.execute(predictions.update().where(p.actual.is_(None), p.id % 2 == 0).values(actual=p.prediction))
        conn.execute(predictions.update().where(p.id % 5 == 0).values(actual="fungal"))
        conn.execute(predictions.update().where(p.id % 13 == 0).values(ts=p.ts + DAY, model_version="2.0.0"))
        conn.execute(predictions.update().where(p.id % 17 == 0).values(actual=None))
        conn.execute(predictions.delete().where(p.id % 7 == 0))
    assert tally(engine) == recount(engine)
    before = tally(engine)
    with pytest.raises(RuntimeError), engine.begin() as conn:  # the app's transaction fails half-way
        conn.execute(predictions.insert(), rows(rng, 2, 50, labelled=1.0))
        conn.execute(predictions.update().values(actual="healthy"))
        raise RuntimeError("the app crashed")
    assert tally(engine) == before == recount(engine)
    # the junk: only the plain number within tolerance (0.0 vs 0.1) counts as right
    assert tally(engine)[("personalized_growth", "1.0.0", 1_700_000_000 // DAY * DAY)] == \
        recount(engine)[("personalized_growth", "1.0.0", 1_700_000_000 // DAY * DAY)]


def test_an_outcome_not_known_yet_stays_unlabelled_on_either_database(url: str) -> None:
    """pandas turns a missing outcome into NaN; written as such, PostgreSQL kept the text 'NaN' (a
    wrong prediction) where SQLite kept NULL."""
    store = PlantDatabase(url)
    frame = pd.DataFrame([("disease", "1.0.0", 1_700_000_000, "fungal", "fungal"),
                          ("disease", "1.0.0", 1_700_000_001, "fungal", None)],
                         columns=["model_type", "model_version", "ts", "prediction", "actual"])
    assert frame["actual"].isna().sum() == 1
    store.write_frames({"predictions": frame})
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(predictions.c.actual.is_(None))).scalar_one() == 1
    assert tally(store.engine) == {("disease", "1.0.0", 1_700_000_000 // DAY * DAY): (1, 1)}


@pytest.mark.parametrize("end_offset", [0, 5 * 3600 + 17])
def test_the_drift_evidence_from_the_tally_is_the_log_counted_by_utc_day(url: str, end_offset: int) -> None:
    """Whole days from the tally, the day in progress from the log up to the window's end."""
    store = PlantDatabase(url)
    with store.engine.begin() as conn:
        conn.execute(predictions.insert(), rows(np.random.default_rng(5), 1, 600))
    end = 1_700_000_000 // DAY * DAY + 3 * DAY + end_offset
    window = Window(end - 3 * DAY, end, "last_3d")
    last_day = (end - 1) // DAY * DAY
    p = predictions.c
    with store.engine.connect() as conn:
        logged = conn.execute(sa.select(p.ts, p.prediction, p.actual).where(
            p.model_type == "personalized_growth", p.model_version == "1.0.0", p.actual.is_not(None),
            p.ts >= last_day - 2 * DAY, p.ts < end)).all()
    expected: dict[int, list[int]] = {}
    for ts, prediction, actual in logged:
        counts = expected.setdefault((last_day - int(ts) // DAY * DAY) // DAY, [0, 0])
        counts[0] += is_hit("personalized_growth", prediction, actual)
        counts[1] += 1
    by_age = store.logged_hits_by_age("personalized_growth", "1.0.0", window)
    assert by_age == {age: tuple(hn) for age, hn in expected.items()}
    assert set(by_age) == {0, 1, 2}  # the day in progress is included, never a day past the end


def test_a_log_from_before_the_tally_and_a_changed_rule_are_recounted_on_open(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = PlantDatabase(url).engine
    with engine.begin() as conn:
        conn.execute(predictions.insert(), rows(np.random.default_rng(7), 1, 300))
    current = triggers(engine)
    # an earlier release: the log without triggers or tally
    as_before_the_tally(engine)
    assert tally(engine) == {}
    prediction_days.install(engine)
    assert triggers(engine) == current and tally(engine) == recount(engine)
    # a release whose rule counts differently: its own triggers replace these, and it recounts
    monkeypatch.setattr(prediction_days, "_hit", lambda row, dialect: "1")
    prediction_days.install(engine)
    assert triggers(engine).isdisjoint(current)
    assert all(n == h for n, h in tally(engine).values())
    monkeypatch.undo()
    prediction_days.install(engine)
    assert triggers(engine) == current and tally(engine) == recount(engine)


def test_racing_writers_and_one_killed_inside_its_transaction_leave_the_tally_exact(url: str) -> None:
    """Three processes open a log from before the tally at once (each may install it), two write
    while the third is SIGKILLed with its writes uncommitted."""
    engine = PlantDatabase(url).engine
    with engine.begin() as conn:
        conn.execute(predictions.insert(), rows(np.random.default_rng(9), 1, 200))
    as_before_the_tally(engine)
    victim = subprocess.Popen([*WRITER, url, "stuck", "1", "99"], stdout=subprocess.PIPE, text=True)
    writers = [subprocess.Popen([*WRITER, url, "writer", str(seed), str(seed)]) for seed in (2, 3)]
    try:
        assert victim.stdout.readline().strip() == "in transaction"
        victim.kill()
        victim.wait(timeout=30)
        assert [w.wait(timeout=240) for w in writers] == [0, 0]
    finally:
        for process in (victim, *writers):
            process.kill()
    p = predictions.c
    with engine.connect() as conn:
        by_unit = dict(conn.execute(sa.select(p.unit_id, sa.func.count()).group_by(p.unit_id)).all())
    assert 99 not in by_unit and by_unit[2] > 0 and by_unit[3] > 0  # the victim's writes never landed
    assert len(triggers(engine)) == (4 if engine.dialect.name == "sqlite" else 3)
    assert tally(engine) == recount(engine)
