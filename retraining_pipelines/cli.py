"""`retraining`: the project's console script (seed the demo data, run the service)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.generator import GeneratorConfig, demo_config, generate
from retraining_pipelines.settings import PROJECT_DAGSTER_HOME, dagster_home


def seed_demo(store: PlantDataStore, config: GeneratorConfig, force: bool = False) -> bool:
    """Fill an empty plant database with generated demo data; False when it already had data."""
    if not force and not store.is_empty():
        return False
    store.write_frames(generate(config).tables())
    return True


def _cmd_seed(args: argparse.Namespace) -> int:
    store = PlantDataStore()
    config = demo_config(days=args.days, units=args.units)
    if seed_demo(store, config, force=args.force):
        print(f"Seeded {args.units} grow units x {args.days} days of demo plant data into {store.url}")
    else:
        print(f"{store.url} already has plant data; nothing written (use --force to add more).")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="retraining", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    seed = sub.add_parser("seed-demo", help="generate demo plant data into the plant database")
    seed.add_argument("--days", type=int, default=180)
    seed.add_argument("--units", type=int, default=12)
    seed.add_argument("--force", action="store_true", help="write even if data exists")
    seed.set_defaults(func=_cmd_seed)
    serve = sub.add_parser("serve", help="run the Dagster UI and daemon (seeds demo data first)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)
    serve.set_defaults(func=_cmd_serve)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
