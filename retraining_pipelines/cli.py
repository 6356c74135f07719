"""`retraining`: the project's console script (seed the demo data, run the service)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.drift import replay_predictions
from retraining_pipelines.errors import InvalidFieldError, RetrainingError
from retraining_pipelines.generator import DRIFT_KINDS, DriftScenario, GeneratorConfig, demo_config, generate
from retraining_pipelines.service import AutomatedRetrainingService
from retraining_pipelines.settings import PROJECT_DAGSTER_HOME, dagster_home

DEFAULT_WEBSERVER = "http://127.0.0.1:3000"  # where `retraining serve` (scripts/run) listens


def seed_demo(store: PlantDataStore, config: GeneratorConfig, force: bool = False) -> bool:
    """Fill an empty plant database with generated demo data; False when it already had data."""
    if not force and not store.is_empty():
        return False
    store.write_frames(generate(config).tables())
    return True


HELD_BACK = "demo_held_back.json"  # under DAGSTER_HOME: the demo world whose drifted days wait


def _cmd_seed(args: argparse.Namespace) -> int:
    store = PlantDataStore()
    if args.release_drift:
        return _release_drift(store)
    config = demo_config(days=args.days, units=args.units, drift=args.drift, drift_days_ago=args.drift_days_ago,
                         drift_magnitude=args.drift_magnitude)
    if args.hold_back_drift:
        return _hold_back_drift(store, config, args)
    if seed_demo(store, config, force=args.force):
        print(f"Seeded {args.units} grow units x {args.days} days of demo plant data into {store.url}")
    else:
        print(f"{store.url} already has plant data; nothing written (use --force to add more).")
    return 0


def _hold_back_drift(store: PlantDataStore, config: GeneratorConfig, args: argparse.Namespace) -> int:
    """Write the world up to the drift's start; keep how to make the rest for `--release-drift`."""
    if not config.drift:
        raise InvalidFieldError("--hold-back-drift", True, "only together with --drift KIND")
    if not args.force and not store.is_empty():
        print(f"{store.url} already has plant data; nothing written (use --force to add more).")
        return 0
    drift = config.drift[0]
    before, _ = generate(config).split(int(drift.start.timestamp()))
    store.write_frames(before)
    (dagster_home() / HELD_BACK).write_text(json.dumps({
        "end": config.end.isoformat(), "days": config.days, "units": config.units, "drift": drift.kind,
        "drift_start": drift.start.isoformat(), "drift_magnitude": drift.magnitude}))
    print(f"Seeded {config.units} grow units x {config.days} days up to the start of {drift.kind} drift "
          f"({drift.start:%Y-%m-%d %H:%M} UTC) into {store.url}; `retraining seed-demo --release-drift` adds the rest.")
    return 0


def _release_drift(store: PlantDataStore) -> int:
    """The drifted days arrive, exactly as the held-back world had them."""
    path = dagster_home() / HELD_BACK
    if not path.exists():
        raise InvalidFieldError("--release-drift", True, f"only after `seed-demo --drift KIND --hold-back-drift` "
                                f"(no {path})")
    saved = json.loads(path.read_text())
    start = datetime.fromisoformat(saved["drift_start"])
    config = GeneratorConfig(end=datetime.fromisoformat(saved["end"]), days=saved["days"], units=saved["units"],
                             drift=(DriftScenario(saved["drift"], start, saved["drift_magnitude"]),))
    _, after = generate(config).split(int(start.timestamp()))
    store.write_frames(after)
    path.unlink()
    rows = sum(len(frame) for frame in after.values())
    print(f"Released {rows} rows of {saved['drift']} drift since {start:%Y-%m-%d %H:%M} UTC into {store.url}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    """Seed on first start, then hand the process to `dagster dev` (UI + daemon)."""
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_DAGSTER_HOME))
    dagster_home().mkdir(parents=True, exist_ok=True)
    store = PlantDataStore()
    if seed_demo(store, demo_config()):
        print(f"First start: seeded demo plant data into {store.url}")
    workspace = PROJECT_DAGSTER_HOME.parent / "workspace.yaml"
    # the dagster script installed beside this interpreter, so an unactivated venv works too
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-w", str(workspace), "-h", args.host, "-p", str(args.port)]
    os.execvp(command[0], command)
    return 0  # pragma: no cover - execvp does not return


def _service(args: argparse.Namespace) -> AutomatedRetrainingService:
    return AutomatedRetrainingService(webserver_url=args.webserver)


def _cmd_jobs_list(args: argparse.Namespace) -> int:
    print(json.dumps({"jobs": [j.to_dict() for j in _service(args).get_retraining_schedule()]}, indent=2))
    return 0


def _cmd_jobs_add(args: argparse.Namespace) -> int:
    job_id = _service(args).add_job(args.model_type, args.schedule_type, args.day, args.time, args.threshold,
                                    args.min_samples, args.timezone, args.time_range)
    print(json.dumps({"job_id": job_id, "message": "Retraining job scheduled"}))
    return 0


def _cmd_jobs_remove(args: argparse.Namespace) -> int:
    _service(args).remove_job(args.job_id)
    print(json.dumps({"message": "Retraining job removed"}))
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    service = AutomatedRetrainingService()
    count = replay_predictions(service.plant_store, service.registry, args.model_type, args.time_range)
    print(f"Logged {count} predictions of the active {args.model_type} model with their outcomes.")
    print(json.dumps(service.check_drift(args.model_type).to_dict(), indent=2, default=str))
    return 0


def _add_job_commands(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="list, add or remove retraining jobs").add_subparsers(dest="jobs", required=True)
    for name, func in (("list", _cmd_jobs_list), ("add", _cmd_jobs_add), ("remove", _cmd_jobs_remove)):
        cmd = jobs.add_parser(name)
        cmd.add_argument("--webserver", default=DEFAULT_WEBSERVER,
                         help="reload this Dagster webserver's code location after a change")
        cmd.set_defaults(func=func)
        if name == "add":
            cmd.add_argument("model_type")
            cmd.add_argument("schedule_type", help="daily | weekly | monthly | on_drift")
            cmd.add_argument("--day", type=int, help="weekly: 0 = Monday .. 6 = Sunday")
            cmd.add_argument("--time", help="HH:MM (scheduled jobs)")
            cmd.add_argument("--threshold", type=float, help="on_drift: relative accuracy drop, e.g. 0.15")
            cmd.add_argument("--min-samples", type=int)
            cmd.add_argument("--timezone", default="UTC")
            cmd.add_argument("--time-range", default="last_90d")
        if name == "remove":
            cmd.add_argument("job_id", type=int)
    replay = sub.add_parser("replay-predictions",
                            help="log the active model's predictions on recent plant data, then check drift")
    replay.add_argument("model_type")
    replay.add_argument("--time-range", default="last_7d")
    replay.set_defaults(func=_cmd_replay)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="retraining", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    seed = sub.add_parser("seed-demo", help="generate demo plant data into the plant database")
    seed.add_argument("--days", type=int, default=180)
    seed.add_argument("--units", type=int, default=12)
    seed.add_argument("--force", action="store_true", help="write even if data exists")
    seed.add_argument("--drift", choices=sorted(DRIFT_KINDS), help="switch on a drift scenario")
    seed.add_argument("--drift-days-ago", type=float, default=10, help="when the drift starts")
    seed.add_argument("--drift-magnitude", type=float, default=1.0, help="scales the drift's size")
    seed.add_argument("--hold-back-drift", action="store_true",
                      help="write only the data before the drift starts (train a model on it first)")
    seed.add_argument("--release-drift", action="store_true", help="write the drifted days held back before")
    seed.set_defaults(func=_cmd_seed)
    serve = sub.add_parser("serve", help="run the Dagster UI and daemon (seeds demo data first)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)
    serve.set_defaults(func=_cmd_serve)
    _add_job_commands(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RetrainingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
