"""Does the per-feature shift report mean something? Stable worlds must stay quiet, drifts must show.

For every generator scenario (and a stable world) x seed, at a hobby grower's 8 units, the report
(`DriftDetector.check_features`: each non-calendar feature's daily mean, its latest jump against
its own jumps of the last 60 days) is computed as of every day of the last `SIMULATED_DAYS` days,
for every model type. No model is needed: the report reads the inputs only. Reported per
(scenario, model): days with a verdict, days the inputs counted as shifted (before and after the
drift started), the first day after the drift start they did, and the features most often past
`SHIFT_LIMIT`. Run on demand (minutes, never in CI):

    .venv/bin/python -m benchmarks.feature_shift --seeds 3 [--models growth_stage ...] [--write]
"""

from __future__ import annotations

import collections
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from retraining_pipelines.catalog import MODEL_TYPES
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.drift import SHIFT_LIMIT, DriftDetector
from retraining_pipelines.generator import DriftScenario, GeneratorConfig, generate
from retraining_pipelines.registry import ModelRegistry

from .drift_scenarios import DRIFT_DAYS, END, SCENARIOS, SIMULATED_DAYS, WORLD_DAYS, publish, scenario_parser, worlds


def run_world(scenario: str, seed: int, units: int, models: tuple[str, ...] = MODEL_TYPES) -> dict[str, dict]:
    """Per model type: the days judged, shifted before / after the drift start, first day, features moved."""
    home = Path(tempfile.mkdtemp(prefix="feature-shift-"))
    drift_start = END - timedelta(days=DRIFT_DAYS)
    drift = () if scenario == "stable" else (DriftScenario(scenario, drift_start),)
    store = PlantDataStore(database_url=f"sqlite:///{home / 'plant.sqlite'}")
    store.write_frames(generate(GeneratorConfig(end=END, days=WORLD_DAYS, units=units, seed=seed,
                                                drift=drift)).tables())
    detector = DriftDetector(ModelRegistry(home / "registry"), store)
    result = {}
    for model in models:
        row = {"judged": 0, "before": 0, "after": 0, "first": None, "moved": collections.Counter(), "days_before": 0}
        for i in range(1, SIMULATED_DAYS + 1):
            day = END - timedelta(days=SIMULATED_DAYS - i)
            shift = detector.check_features(model, day)
            if shift is None or shift.shifted is None:
                continue
            row["judged"] += 1
            after = day > drift_start if drift else False
            row["days_before"] += not after
            if shift.shifted:
                row["after" if after else "before"] += 1
                if after and row["first"] is None:
                    row["first"] = (day - drift_start).days
            row["moved"].update(f for f, z in shift.per_sensor.items() if abs(z) >= SHIFT_LIMIT)
        result[model] = row
    return result


def report(results: dict[tuple[str, int], dict[str, dict]], units: int, seeds: int, seconds: float) -> str:
    lines = [f"## Per-feature shift report at {units} units ({seeds} seeds, {SIMULATED_DAYS} days each, drift "
             f"{DRIFT_DAYS} days before the end)", "",
             f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores in {seconds / 60:.1f} min "
             "by `python -m benchmarks.feature_shift`.", "",
             "| scenario | model | days judged | shifted, no drift (days) | shifted after the drift start (days) | "
             "first day after the start | features past the limit most often |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    quiet_days = quiet_flags = 0
    for scenario in SCENARIOS:
        for model in MODEL_TYPES:
            rows = [r[model] for (s, _), r in results.items() if s == scenario and model in r]
            if not rows:
                continue
            judged = sum(r["judged"] for r in rows)
            before = sum(r["before"] for r in rows)
            quiet_days += sum(r["days_before"] for r in rows)
            quiet_flags += before
            after = sum(r["after"] for r in rows)
            firsts = sorted(r["first"] for r in rows if r["first"] is not None)
            moved = sum((r["moved"] for r in rows), collections.Counter()).most_common(3)
            lines.append(f"| {scenario} | {model} | {judged} | {before} | "
                         f"{after if scenario != 'stable' else '-'} | "
                         f"{', '.join(map(str, firsts)) + f' ({len(firsts)}/{len(rows)})' if firsts else '-'} | "
                         f"{', '.join(f'{f} ({n})' for f, n in moved) or '-'} |")
    share = quiet_flags / quiet_days if quiet_days else 0.0
    lines += ["", f"- days without drift on which the report said \"shifted\": {quiet_flags} of {quiet_days} "
              f"model-days ({share:.1%})", ""]
    return "\n".join(lines)


def main() -> None:
    parser = scenario_parser(__doc__)
    parser.add_argument("--models", nargs="*", default=list(MODEL_TYPES))
    args = parser.parse_args()
    started = time.perf_counter()
    results = {world: run_world(*world, args.units, tuple(args.models))
               for world in worlds(args.scenarios, args.seeds, args.first_seed)}
    publish(report(results, args.units, args.seeds, time.perf_counter() - started), args.write)


if __name__ == "__main__":
    main()
