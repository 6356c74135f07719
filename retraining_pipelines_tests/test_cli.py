"""The `retraining` console script: demo seeding on first start only."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from retraining_pipelines.catalog import get_spec
from retraining_pipelines.cli import main, seed_demo
from retraining_pipelines.datastore import PlantDataStore

from .conftest import TEST_CONFIG, project_instance
from .live import cli, new_home


def _count(store: PlantDataStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text("select count(*) from sensor_readings")).scalar_one()


def test_seed_demo_writes_once_then_leaves_existing_data_alone(isolated_dagster_home: Path) -> None:
    store = PlantDataStore()
    small = dataclasses.replace(TEST_CONFIG, days=3, units=2)
    assert seed_demo(store, small) is True
    first = _count(store)
    assert first > 0
    assert seed_demo(store, small) is False
    assert _count(store) == first
    assert (isolated_dagster_home / "plant_data.sqlite").exists()


def test_seed_demo_command(isolated_dagster_home: Path, capsys) -> None:
    assert main(["seed-demo", "--days", "2", "--units", "1"]) == 0
    assert "Seeded 1 grow units x 2 days" in capsys.readouterr().out
    assert main(["seed-demo", "--days", "2", "--units", "1"]) == 0
    assert "already has plant data" in capsys.readouterr().out


def _no_webserver() -> list[str]:
    """No webserver to reload: the job store changes, the daemon picks it up on its own."""
    return []


def test_jobs_commands_add_list_and_remove(isolated_dagster_home: Path, capsys) -> None:
    import json

    assert main(["jobs", "add", "climate_optimizer", "weekly", "--day", "2", "--time", "03:00", *_no_webserver()]) == 0
    assert json.loads(capsys.readouterr().out) == {"job_id": 1, "message": "Retraining job scheduled"}
    assert main(["jobs", "list", *_no_webserver()]) == 0
    listed = json.loads(capsys.readouterr().out)["jobs"]
    assert listed[0]["schedule_config"]["day"] == 2 and listed[0]["next_run"].endswith("T03:00:00Z")
    assert main(["jobs", "remove", "1", *_no_webserver()]) == 0
    assert main(["jobs", "remove", "1", *_no_webserver()]) == 2
    assert "Invalid job_id: 1" in capsys.readouterr().err


def test_jobs_add_with_bad_input_exits_2_naming_the_field(isolated_dagster_home: Path, capsys) -> None:
    assert main(["jobs", "add", "disease", "weekly", "--day", "9", *_no_webserver()]) == 2
    assert "Invalid schedule_day: 9. Allowed: 0-6" in capsys.readouterr().err
    assert main(["jobs", "list", *_no_webserver()]) == 0
    assert '"jobs": []' in capsys.readouterr().out


def test_replay_predictions_logs_and_reports_drift(isolated_dagster_home: Path, plant_db_url: str, capsys,
                                                   monkeypatch) -> None:
    from retraining_pipelines import AutomatedRetrainingService

    monkeypatch.setenv("PLANT_DATABASE_URL", plant_db_url)

    with project_instance() as instance:  # this points DAGSTER_HOME at the instance's home meanwhile
        AutomatedRetrainingService(instance=instance).retrain_model("growth_stage", force=True)
        assert main(["replay-predictions", "growth_stage", "--time-range", "last_7d"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Logged ") and '"status": "stable"' in out


def test_seed_demo_can_switch_on_a_drift_scenario(isolated_dagster_home: Path) -> None:
    from datetime import UTC, datetime

    import pandas as pd

    from retraining_pipelines.generator import GeneratorConfig, generate

    assert main(["seed-demo", "--days", "6", "--units", "2", "--drift", "sensor_recalibration",
                 "--drift-days-ago", "3"]) == 0
    with PlantDataStore().engine.connect() as conn:
        seeded = pd.read_sql(sa.text("select unit_id, ts, humidity from sensor_readings"), conn)
    end_ts = (int(seeded["ts"].max()) // 3600 + 1) * 3600  # the demo's end, recovered from its data
    plain = generate(GeneratorConfig(end=datetime.fromtimestamp(end_ts, UTC), days=6, units=2)).sensor_readings
    both = seeded.merge(plain, on=["unit_id", "ts"], suffixes=("_drift", "_plain"))
    assert len(both) == len(seeded)
    late = both["ts"] >= end_ts - 3 * 86400 + 3600
    shift = both["humidity_drift"] - both["humidity_plain"]
    assert (shift[~late & (both["ts"] < end_ts - 3 * 86400 - 3600)] == 0).all()
    assert shift[late].mean() > 8, "the recalibrated humidity sensors read about 10 points high"


def test_held_back_drift_arrives_on_release_and_bad_use_changes_nothing(isolated_dagster_home: Path, capsys) -> None:
    store = PlantDataStore()
    assert main(["seed-demo", "--days", "6", "--units", "2", "--hold-back-drift"]) == 2
    assert "--hold-back-drift" in capsys.readouterr().err and store.is_empty()
    assert main(["seed-demo", "--release-drift"]) == 2
    assert "--release-drift" in capsys.readouterr().err and store.is_empty()
    assert main(["seed-demo", "--days", "6", "--units", "2", "--drift", "heat_wave", "--drift-days-ago", "2",
                 "--hold-back-drift"]) == 0
    newest = lambda: int(pd.read_sql("SELECT max(ts) AS ts FROM sensor_readings", store.engine)["ts"][0])  # noqa: E731
    held = json.loads((isolated_dagster_home / "demo_held_back.json").read_text())
    assert newest() < datetime.fromisoformat(held["drift_start"]).timestamp()
    assert main(["seed-demo", "--release-drift"]) == 0
    assert newest() > datetime.fromisoformat(held["drift_start"]).timestamp() + 86400
    assert not (isolated_dagster_home / "demo_held_back.json").exists()


def test_an_unreachable_webserver_after_a_job_change_exits_3_with_one_line(
    isolated_dagster_home: Path, capsys
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    assert main(["jobs", "add", "disease", "daily", "--webserver", dead]) == 3
    captured = capsys.readouterr()
    assert json.loads(captured.out)["job_id"] == 1, "the job itself is stored"
    err = captured.err.strip()
    assert err.startswith("error: job 1 is stored, but the Dagster webserver was not reloaded") and dead in err
    assert "\n" not in err


def test_model_commands_retrain_versions_history_drift_and_rollback(
    plant_db_url: str, isolated_dagster_home: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("PLANT_DATABASE_URL", plant_db_url)
    for _ in range(2):
        assert main(["retrain", "disease", "--force"]) == 0
        result = json.loads(capsys.readouterr().out)
    assert result["new_version"] == "1.1.0" and result["old_version"] == "1.0.0"
    assert main(["versions", "disease"]) == 0
    details = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in details["versions"]] == ["1.1.0", "1.0.0"]
    assert main(["history", "--model-type", "disease"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert len(runs) == 2 and all(r["status"] == "SUCCESS" and r["outcome"] for r in runs)
    assert main(["drift", "disease"]) == 0
    drift = json.loads(capsys.readouterr().out)
    assert drift["status"] == "insufficient_data"  # nothing logged yet
    # asked by a person, the verdict comes with the per-feature report of the model's own inputs
    assert drift["feature_shift"]["per_sensor"] and "feature" in drift["feature_shift"]["reason"]
    assert set(drift["feature_shift"]["per_sensor"]) <= set(get_spec("disease").features)
    if details["active_version"] == "1.1.0":
        assert main(["rollback", "disease"]) == 0
        assert json.loads(capsys.readouterr().out) == {"model_type": "disease", "from_version": "1.1.0",
                                                       "to_version": "1.0.0"}
    assert main(["rollback", "disease"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Nothing to roll back to") and "\n" not in err
    assert main(["retrain", "durian"]) == 2
    assert "Invalid model_type: 'durian'" in capsys.readouterr().err


def test_the_console_script_prints_the_whole_result_and_exits_with_mains_code(
    plant_db_url: str, isolated_dagster_home: Path
) -> None:
    """`retraining` ends through `exit_process` (no last garbage collections): nothing it owes may be lost."""
    home, env = new_home(isolated_dagster_home), {"PLANT_DATABASE_URL": plant_db_url}  # the committed dagster.yaml
    done = cli(home, "retrain", "growth_stage", "--force", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["new_version"] == "1.0.0"  # all of it was flushed
    refused = cli(home, "retrain", "durian", env=env)
    assert refused.returncode == 2 and "Invalid model_type: 'durian'" in refused.stderr
    listed = cli(home, "history", "--model-type", "growth_stage", env=env)  # a later process reads the run
    assert listed.returncode == 0, listed.stderr[-2000:]
    [run] = json.loads(listed.stdout)["runs"]
    assert run["status"] == "SUCCESS" and run["outcome"]
