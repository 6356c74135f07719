"""The promotion gate's basis, before and after: champion on `last_30d`, candidate on `last_90d`.

The seeded jobs use exactly that pair (on_drift `last_30d`, weekly `last_90d`). The old gate scored the
champion on the candidate's whole hold-out, a third of which the champion had trained on; the fair
gate scores both on the rows after the champion's training period. Run on demand:

    .venv/bin/python -m benchmarks.gate_fairness
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime

import dagster as dg

from benchmarks import LATE_AUTUMN
from retraining_pipelines.catalog import get_spec
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.features import engineer_features
from retraining_pipelines.generator import GeneratorConfig, generate
from retraining_pipelines.promotion import ROLLBACK_TOLERANCE_PCT, relative_improvement
from retraining_pipelines.training import time_split, validate_model
from retraining_pipelines_tests.helpers import metadata_of, pipeline_resources, retrain

SEEDS = (7, 11, 23)
MODELS = ("disease", "climate_optimizer", "growth_stage")


def one(store: PlantDataStore, model: str, registry_dir: str) -> tuple[dict, float]:
    with dg.instance_for_test() as instance:
        resources = pipeline_resources(store, registry_dir=registry_dir)
        assert retrain(model, store, instance, {"time_range": "last_30d"}, resources=resources).success
        meta = metadata_of(retrain(model, store, instance, {"time_range": "last_90d"}, resources=resources),
                           "validation_metrics")
        champion = resources["model_registry"].get().load_model(model, "1.0.0")
    split = time_split(engineer_features(store.training_samples(model, time_range="last_90d")))
    whole = validate_model(champion, split.X_holdout, split.y_holdout, get_spec(model))["accuracy"]
    return meta, relative_improvement(whole, meta["accuracy"])


def main() -> None:
    print("| seed | model | hold-out rows | unseen by champion | old basis | fair basis |")
    print("| --- | --- | --- | --- | --- | --- |")
    for seed in SEEDS:
        home = tempfile.mkdtemp()
        os.environ["DAGSTER_HOME"] = home
        store = PlantDataStore(database_url=f"sqlite:///{home}/plant.sqlite")
        config = GeneratorConfig(end=datetime.now(UTC), days=180, units=12, seed=seed,
                                 season_of=LATE_AUTUMN)
        store.write_frames(generate(config).tables())
        for model in MODELS:
            meta, old = one(store, model, f"{home}/registry_{model}")
            verdict = "reject" if old < -ROLLBACK_TOLERANCE_PCT else "promote"
            fair = "promote" if meta["promoted"] else "reject"
            print(f"| {seed} | {model} | {meta['holdout_rows']} | {meta['fair_holdout_rows']} | "
                  f"{old:+.1f} % ({verdict}) | {meta['improvement']:+.1f} % ({fair}) |", flush=True)


if __name__ == "__main__":
    main()
