"""A plant app writing the prediction log, for the tally's race tests (run as its own process).

    python -m retraining_pipelines_tests.log_writer URL writer SEED UNIT   # rounds of single-statement writes
    python -m retraining_pipelines_tests.log_writer URL stuck SEED UNIT    # writes, then waits inside its transaction

Each transaction is one statement, as an app logging predictions and outcomes writes them. `stuck`
prints "in transaction" once its writes are made and uncommitted, then sleeps: the test kills it there.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from retraining_pipelines.plantdb import PlantDatabase, predictions

DAY = 86400
KINDS = ("disease", "personalized_growth", "irrigation_duration")


def rows(rng: np.random.Generator, unit: int, count: int, labelled: float = 0.6) -> list[dict]:
    """Predictions over 4 days, some with outcomes, near and past each regressor's tolerance."""
    out = []
    for _ in range(count):
        kind = str(rng.choice(KINDS))
        if kind == "disease":
            prediction, actual = str(rng.choice(["healthy", "fungal"])), str(rng.choice(["healthy", "fungal"]))
        else:
            prediction = f"{rng.normal(10, 1):.3f}"
            actual = f"{float(prediction) + rng.normal(0, 15 if kind == 'irrigation_duration' else 0.12):.3f}"
        out.append({"model_type": kind, "model_version": str(rng.choice(["1.0.0", "1.1.0"])),
                    "ts": int(1_700_000_000 + rng.integers(0, 4 * DAY)), "unit_id": unit,
                    "prediction": prediction, "actual": actual if rng.random() < labelled else None})
    return out


def write(url: str, seed: int, unit: int, rounds: int = 15) -> None:
    rng = np.random.default_rng(seed)
    engine = PlantDatabase(url).engine  # opening it installs the tally's triggers if need be
    p = predictions.c
    for _ in range(rounds):
        with engine.begin() as conn:
            conn.execute(predictions.insert(), rows(rng, unit, 40))
        with engine.begin() as conn:  # outcomes arrive for this unit's open predictions
            conn.execute(predictions.update().where(p.unit_id == unit, p.actual.is_(None), p.id % 3 == 0)
                         .values(actual=p.prediction))
        with engine.begin() as conn:  # a correction
            conn.execute(predictions.update().where(p.unit_id == unit, p.id % 7 == 0).values(actual="healthy"))
        with engine.begin() as conn:
            conn.execute(predictions.delete().where(p.unit_id == unit, p.id % 11 == 0))


def stuck(url: str, seed: int, unit: int) -> None:
    engine = PlantDatabase(url).engine
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        conn.execute(predictions.insert(), rows(np.random.default_rng(seed), unit, 300, labelled=1.0))
        conn.execute(predictions.update().where(predictions.c.unit_id == unit).values(actual="fungal"))
        print("in transaction", flush=True)
        time.sleep(600)


if __name__ == "__main__":
    url, mode, seed, unit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    (write if mode == "writer" else stuck)(url, seed, unit)
