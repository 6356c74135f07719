"""The plant app's GraphQL operations (`docs/graphql/*.graphql`), each run against a live service.

`retraining serve` (webserver + daemon) on a free loopback port, small demo data; every document is
sent as written, with the variables its header comment shows. The README's `DagsterGraphQLClient`
snippet runs against the same server.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from retraining_pipelines.catalog import MODEL_TYPES

from .live import ROOT, cli, graphql, new_home, serving

DOCS = ROOT / "docs" / "graphql"


def _run(url: str, name: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    return graphql(url, (DOCS / f"{name}.graphql").read_text(), variables)


def _metadata(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["label"]: e.get("floatValue", e.get("boolValue", e.get("text"))) for e in entries}


def _outcome(url: str, run_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _run(url, "run_outcome", {"runId": run_id})["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return run
        time.sleep(2)
    raise TimeoutError(f"run {run_id} did not finish")


def test_every_documented_operation_works_on_a_live_service(tmp_path: Path) -> None:
    assert {p.stem for p in DOCS.glob("*.graphql")} == {
        "retrain_model_type", "backfill_all", "latest_gate_decisions", "run_outcome", "schedules",
        "start_schedule", "stop_schedule", "start_sensor", "stop_sensor", "reload"}
    home = new_home(tmp_path)
    assert cli(home, "seed-demo", "--days", "90", "--units", "6").returncode == 0
    with serving(home) as url:
        launched = _run(url, "retrain_model_type", {"modelType": "disease"})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run = _outcome(url, launched["run"]["runId"])
        assert run["status"] == "SUCCESS" and {"key": "dagster/partition", "value": "disease"} in run["tags"]
        gate = next(_metadata(m["metadataEntries"]) for m in run["assetMaterializations"]
                    if m["assetKey"]["path"] == ["validation_metrics"])
        assert gate["promoted"] is True and gate["active_version"] == gate["new_version"] == "1.0.0"
        _run_output_is_served_as_the_ui_reads_it(url, launched["run"]["runId"])

        latest = _run(url, "latest_gate_decisions", {"modelTypes": list(MODEL_TYPES)})["assetOrError"]
        newest = {m["partition"]: _metadata(m["metadataEntries"]) for m in reversed(latest["assetMaterializations"])}
        assert set(newest) == {"disease"} and newest["disease"]["active_version"] == "1.0.0"
        assert 0 < newest["disease"]["accuracy"] <= 1

        repo = _run(url, "schedules")["repositoryOrError"]
        weekly = next(s for s in repo["schedules"] if s["name"] == "retrain_climate_optimizer_weekly_job1")
        assert weekly["cronSchedule"] == "0 3 * * 3" and weekly["futureTicks"]["results"][0]["timestamp"] > time.time()
        started = _run(url, "start_schedule", {"name": weekly["name"]})["startSchedule"]
        assert started["scheduleState"]["status"] == "RUNNING"
        stopped = _run(url, "stop_schedule", {"id": started["scheduleState"]["id"]})["stopRunningSchedule"]
        assert stopped["scheduleState"]["status"] == "STOPPED"
        sensor = _run(url, "start_sensor", {"name": "drift_sensor"})["startSensor"]
        assert sensor["sensorState"]["status"] == "RUNNING"
        halted = _run(url, "stop_sensor", {"id": sensor["sensorState"]["id"]})["stopSensor"]
        assert halted["instigationState"]["status"] == "STOPPED"
        assert _run(url, "reload")["reloadRepositoryLocation"]["loadStatus"] == "LOADED"

        backfill = _run(url, "backfill_all")["launchPartitionBackfill"]
        assert backfill["__typename"] == "LaunchBackfillSuccess"
        partitions = graphql(url, "query B($id: String!) { partitionBackfillOrError(backfillId: $id) "
                             "{ ... on PartitionBackfill { partitionNames } } }", {"id": backfill["backfillId"]})
        assert sorted(partitions["partitionBackfillOrError"]["partitionNames"]) == sorted(MODEL_TYPES)

        _readme_client_snippet(url)
        _launches_without_a_model_type_are_refused(url)


def _launches_without_a_model_type_are_refused(url: str) -> None:
    """The launch itself fails with the list of model types, and nothing stays queued."""
    refused = _run(url, "retrain_model_type", {"modelType": "durian"})["launchRun"]
    assert refused["__typename"] == "PythonError" and "personalized_growth" in refused["message"], refused
    untagged = graphql(url, "mutation { launchRun(executionParams: {selector: {repositoryLocationName: "
                       '"retraining_pipelines", repositoryName: "__repository__", jobName: "retrain_model_job"}}) '
                       "{ __typename ... on PythonError { message } } }")["launchRun"]
    assert untagged["__typename"] == "PythonError" and "dagster/partition" in untagged["message"]
    runs = graphql(url, '{ runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED]}) '
                        "{ ... on Runs { results { runId tags { key value } } } } }")["runsOrError"]["results"]
    assert all({"key": "dagster/partition", "value": "durian"} not in r["tags"] for r in runs)
    assert all(any(t["key"] == "dagster/partition" for t in r["tags"]) for r in runs), runs


def _run_output_is_served_as_the_ui_reads_it(url: str, run_id: str) -> None:
    """The UI's *stdout / stderr* view of a run the daemon launched (`compute_logs.py` writes the files)."""
    events = graphql(url, "query L($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events { "
                     "__typename ... on LogsCapturedEvent { fileKey } } } } }", {"id": run_id})
    [file_key] = [e["fileKey"] for e in events["logsForRun"]["events"] if e["__typename"] == "LogsCapturedEvent"]
    logs = graphql(url, "query C($key: [String!]!) { capturedLogs(logKey: $key) { stdout stderr } }",
                   {"key": [run_id, "compute_logs", file_key]})["capturedLogs"]
    assert 'Started execution of step "training_samples"' in logs["stderr"], logs
    assert "disease v1.0.0: promoted" in logs["stderr"]


def _readme_client_snippet(url: str) -> None:
    """README, *GraphQL for the plant app*: the same retrain with `DagsterGraphQLClient`."""
    from dagster_graphql import DagsterGraphQLClient

    host, port = url.removeprefix("http://").split(":")
    client = DagsterGraphQLClient(host, port_number=int(port))
    run_id = client.submit_job_execution("retrain_model_job", repository_location_name="retraining_pipelines",
                                         repository_name="__repository__",
                                         tags={"dagster/partition": "irrigation_timing"})
    deadline = time.monotonic() + 300
    while client.get_run_status(run_id).value not in ("SUCCESS", "FAILURE", "CANCELED"):
        assert time.monotonic() < deadline, "the client's run did not finish"
        time.sleep(2)
    assert client.get_run_status(run_id).value == "SUCCESS"
