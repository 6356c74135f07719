"""`retraining`: the project's console script (seed the demo data, run the service)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from retraining_pipelines import validation, webserver
from retraining_pipelines.catalog import get_spec
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.drift import DRIFT_WINDOW, replay_predictions
from retraining_pipelines.errors import InvalidFieldError, RetrainingError
from retraining_pipelines.generator import DRIFT_KINDS, DriftScenario, GeneratorConfig, demo_config, generate
from retraining_pipelines.service import AutomatedRetrainingService
from retraining_pipelines.settings import (
    DATABASE_URL_ENV,
    PROJECT_DAGSTER_HOME,
    dagster_home,
    export_for_dagster,
    shared_database_url,
)
from retraining_pipelines.webserver import WEBSERVER_URL_ENV

DEFAULT_WEBSERVER = "http://127.0.0.1:3000"  # where `retraining serve` (scripts/run) listens
DEFAULT_API_PORT = 8000


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
    """Seed on first start, then run `dagster dev` (UI + daemon) beside the REST API; stop both together.

    The REST API runs in this process; `dagster dev` is a child in the same process group, so Ctrl-C
    reaches both, and a SIGTERM to this process (what `kill`, systemd and docker send) stops the
    API, then asks `dagster dev` to shut down its webserver, daemon and code servers.
    """
    from retraining_pipelines import api  # FastAPI and uvicorn: 0.4 s no other command needs

    export_for_dagster()  # the processes started below read DAGSTER_HOME and dagster.yaml's env vars
    token = os.environ.get(api.TOKEN_ENV) or None
    api.check_bind(args.api_host, token)  # refuse an exposed API before starting anything
    dagster_home().mkdir(parents=True, exist_ok=True)
    store = PlantDataStore()
    if seed_demo(store, demo_config()):
        print(f"First start: seeded demo plant data into {store.url}")
    ui_url = f"http://{args.host}:{args.port}"
    os.environ[WEBSERVER_URL_ENV] = ui_url
    workspace = PROJECT_DAGSTER_HOME.parent / "workspace.yaml"
    # the dagster script installed beside this interpreter, so an unactivated venv works too
    dagster_bin = Path(sys.executable).with_name("dagster")
    command = [str(dagster_bin), "dev", "-w", str(workspace), "-h", args.host, "-p", str(args.port)]
    server = api.build_server(args.api_host, args.api_port, AutomatedRetrainingService(webserver_url=ui_url), token)
    # Started in the background (`&`, nohup), this process ignores SIGINT, and a child would inherit that and
    # never shut down; and `dagster dev` gets a process group of its own, so that stopping it reaches the
    # webserver, daemon and code servers it starts, whoever started us.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    dagster = subprocess.Popen(command, start_new_session=True)
    threading.Thread(target=_stop_when_exits, args=(dagster, server), daemon=True).start()
    print(f"Dagster UI: {ui_url}   REST API: http://{args.api_host}:{args.api_port}{api.PREFIX} "
          f"(OpenAPI at /openapi.json). Ctrl-C stops both.", flush=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        # uvicorn handles these while it serves, then re-raises them to the handler it found: make that a
        # no-op so this process lives on to stop `dagster dev` instead of dying with the signal
        signal.signal(sig, lambda *_: None)
    try:
        server.run()  # returns on SIGINT / SIGTERM
    finally:
        _stop(dagster)
    return dagster.returncode or 0


def _cmd_worker(args: argparse.Namespace) -> int:
    """Become a Celery worker of the scaled-out deployment (the process is replaced: signals reach Celery)."""
    from retraining_pipelines import workers  # dagster-celery: only the scaled-out deployment needs it

    if not shared_database_url():
        raise InvalidFieldError(DATABASE_URL_ENV, None, "a PostgreSQL URL shared by the daemon and every worker "
                                "(a worker of the embedded SQLite deployment would see none of its runs)")
    validation.whole("concurrency", args.concurrency, 1, os.cpu_count() or 1)
    export_for_dagster()  # the worker's tasks open the instance from DAGSTER_HOME
    command = workers.worker_command(args.concurrency, args.name)
    os.execve(command[0], command, {**os.environ, **workers.worker_env(args.concurrency)})
    return 1  # not reached


def _stop_when_exits(child: subprocess.Popen, server: Any) -> None:
    """If `dagster dev` dies, the API must not keep answering for a service that is gone."""
    child.wait()
    server.should_exit = True


def _stop(child: subprocess.Popen) -> None:
    """Ask `dagster dev` to shut down as Ctrl-C would, then insist; then clear its process group."""
    for sig, wait in ((signal.SIGINT, 60), (signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if child.poll() is not None:
            break
        _signal_group(child.pid, sig)
        try:
            child.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    _signal_group(child.pid, signal.SIGTERM)  # anything it started and left behind


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _cmd_api(args: argparse.Namespace) -> int:
    """The REST API alone (the UI and daemon run elsewhere: --webserver says where)."""
    from retraining_pipelines import api

    service = AutomatedRetrainingService(webserver_url=args.webserver)
    api.build_server(args.host, args.port, service).run()
    return 0


def _service(args: argparse.Namespace) -> AutomatedRetrainingService:
    return AutomatedRetrainingService()  # reloads are the CLI's own, so a failure can be reported


def _print(payload: object) -> None:
    print(json.dumps(payload, indent=2, default=str))


def _reloaded(args: argparse.Namespace, done: str) -> int:
    """After a job change: reload the webserver's code location when one is named; say so if it cannot."""
    if not args.webserver:
        return 0
    try:
        if webserver.reload_location(args.webserver):
            return 0
        reason = "the reload did not succeed"
    except RetrainingError as err:
        reason = str(err)
    print(f"error: {done}, but the Dagster webserver was not reloaded ({reason}); the daemon picks the change "
          "up on its next workspace refresh.", file=sys.stderr)
    return 3


def _cmd_jobs_list(args: argparse.Namespace) -> int:
    _print({"jobs": [j.to_dict() for j in _service(args).get_retraining_schedule()]})
    return 0


def _cmd_jobs_add(args: argparse.Namespace) -> int:
    job_id = _service(args).add_job(args.model_type, args.schedule_type, args.day, args.time, args.threshold,
                                    args.min_samples, args.timezone, args.time_range, args.drift_signal)
    print(json.dumps({"job_id": job_id, "message": "Retraining job scheduled"}))
    return _reloaded(args, f"job {job_id} is stored")


def _cmd_jobs_remove(args: argparse.Namespace) -> int:
    _service(args).remove_job(args.job_id)
    print(json.dumps({"message": "Retraining job removed"}))
    return _reloaded(args, f"job {args.job_id} is removed")


def _cmd_retrain(args: argparse.Namespace) -> int:
    """Retrain now, in this process (recorded in the instance); prints the spec's result."""
    get_spec(args.model_type)
    service = _service(args)
    result = service.retrain_model(args.model_type, force=args.force, min_samples=args.min_samples,
                                   time_range=args.time_range)
    _print(result.to_dict())
    return 0


def _cmd_versions(args: argparse.Namespace) -> int:
    get_spec(args.model_type)
    _print(_service(args).model_details(args.model_type))
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    get_spec(args.model_type)
    old, new = _service(args).rollback(args.model_type, args.to_version, reason=args.reason)
    _print({"model_type": args.model_type, "from_version": old, "to_version": new})
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    if args.model_type is not None:
        get_spec(args.model_type)
    _print({"runs": [r.to_dict() for r in _service(args).history(args.model_type, args.limit)]})
    return 0


def _cmd_drift(args: argparse.Namespace) -> int:
    get_spec(args.model_type)
    validation.time_range(args.window, "window")
    _print(_service(args).check_drift(args.model_type, args.window, args.threshold).to_dict())
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    get_spec(args.model_type)  # refuse bad input before the service creates its stores
    validation.time_range(args.time_range)
    service = AutomatedRetrainingService()
    count = replay_predictions(service.plant_store, service.registry, args.model_type, args.time_range)
    print(f"Logged {count} predictions of the active {args.model_type} model with their outcomes.")
    print(json.dumps(service.check_drift(args.model_type).to_dict(), indent=2, default=str))
    return 0


def _add_job_commands(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="list, add or remove retraining jobs").add_subparsers(dest="jobs", required=True)
    for name, func in (("list", _cmd_jobs_list), ("add", _cmd_jobs_add), ("remove", _cmd_jobs_remove)):
        cmd = jobs.add_parser(name)
        cmd.add_argument("--webserver", default=os.environ.get(WEBSERVER_URL_ENV),
                         help=f"reload this Dagster webserver's code location after a change (default: "
                         f"${WEBSERVER_URL_ENV}; unset: no reload, the daemon picks changes up itself)")
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
            cmd.add_argument("--drift-signal", help="on_drift: accuracy | inputs | either (default accuracy)")
        if name == "remove":
            cmd.add_argument("job_id", type=int)
    _add_model_commands(sub)
    replay = sub.add_parser("replay-predictions",
                            help="log the active model's predictions on recent plant data, then check drift")
    replay.add_argument("model_type")
    replay.add_argument("--time-range", default="last_7d")
    replay.set_defaults(func=_cmd_replay)


def _add_model_commands(sub: argparse._SubParsersAction) -> None:
    retrain = sub.add_parser("retrain", help="retrain a model type now (in this process) and print the result")
    retrain.add_argument("model_type")
    retrain.add_argument("--force", action="store_true", help="retrain even if no drift is detected")
    retrain.add_argument("--min-samples", type=int)
    retrain.add_argument("--time-range", default="last_90d")
    retrain.set_defaults(func=_cmd_retrain)
    versions = sub.add_parser("versions", help="every version of a model type and its audit trail")
    versions.add_argument("model_type")
    versions.set_defaults(func=_cmd_versions)
    rollback = sub.add_parser("rollback", help="restore the previous (or a named) served version")
    rollback.add_argument("model_type")
    rollback.add_argument("--to-version")
    rollback.add_argument("--reason", default="rollback requested from the CLI")
    rollback.set_defaults(func=_cmd_rollback)
    history = sub.add_parser("history", help="the latest retrain runs and their outcomes")
    history.add_argument("--model-type")
    history.add_argument("--limit", type=int, default=20)
    history.set_defaults(func=_cmd_history)
    drift = sub.add_parser("drift", help="check the active version for drift from the prediction log")
    drift.add_argument("model_type")
    drift.add_argument("--window", default=DRIFT_WINDOW)
    drift.add_argument("--threshold", type=float)
    drift.set_defaults(func=_cmd_drift)


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
    serve.add_argument("--api-host", default="127.0.0.1", help="REST API address (loopback unless a token is set)")
    serve.add_argument("--api-port", type=int, default=DEFAULT_API_PORT)
    serve.set_defaults(func=_cmd_serve)
    rest = sub.add_parser("api", help="run the REST API alone")
    rest.add_argument("--host", default="127.0.0.1")
    rest.add_argument("--port", type=int, default=DEFAULT_API_PORT)
    rest.add_argument("--webserver", default=DEFAULT_WEBSERVER, help="the Dagster webserver that queues runs")
    rest.set_defaults(func=_cmd_api)
    worker = sub.add_parser("worker", help="run a Celery worker of the scaled-out deployment (deploy/README.md)")
    worker.add_argument("--concurrency", type=int, default=1, help="retrains at once (at most one per core)")
    worker.add_argument("--name", help="the worker's Celery name (default: retrain-<pid>@<host>)")
    worker.set_defaults(func=_cmd_worker)
    _add_job_commands(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RetrainingError as err:  # a refusal or failure the service explains
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:  # anything else still gets one line, never a traceback
        print(f"error: {type(err).__name__}: {_one_line(err)}", file=sys.stderr)
        return 1


def exit_process(code: int) -> NoReturn:
    """Ends a command's process without Python's last garbage collections over what it imported.

    By then the command has written and committed everything. At exit the interpreter walks the
    ~300k objects Dagster, pandas and scikit-learn keep, looking for reference cycles to free in a
    process about to end: 0.9 s of a 5.2 s `retraining retrain` on this machine (issue 11,
    BENCHMARKS.md). `gc.freeze()` takes them out of the collector's sight; atexit handlers, flushes
    and closing files happen as always.
    """
    gc.freeze()
    sys.exit(code)


def run() -> NoReturn:
    """The `retraining` console script (pyproject.toml): `main`, then `exit_process`."""
    exit_process(main())


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


if __name__ == "__main__":
    sys.exit(main())
