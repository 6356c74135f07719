"""The REST API on a real uvicorn server on 127.0.0.1, over a real service (stores, instance, registry).

These tests need no Dagster webserver: they cover every route but the queued retrain itself, which
`test_walkthroughs.py` drives end to end through `retraining serve`. A retrain request here gets
the documented 503 `webserver_unavailable`, after every check that comes before queuing.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from retraining_pipelines import AutomatedRetrainingService, InvalidFieldError
from retraining_pipelines.api import PREFIX, build_server, check_bind
from retraining_pipelines.datastore import PlantDataStore
from retraining_pipelines.io_manager import ModelRegistryResource
from retraining_pipelines.runs import PARTITION_TAG, RETRAIN_JOB

from .live import free_port
from .test_bad_input import MODEL, _metadata, _tiny_model

ERROR_KEYS = {"type", "message", "field", "value", "allowed", "run_id"}


class Api:
    """A running API server and a tiny HTTP client for it."""

    def __init__(self, url: str, service: AutomatedRetrainingService) -> None:
        self.url, self.service = url, service

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)


def _serve(service: AutomatedRetrainingService, token: str | None = None) -> Iterator[Api]:
    port = free_port()
    server = build_server("127.0.0.1", port, service, token=token or "")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API server did not start"
        time.sleep(0.05)
    try:
        yield Api(f"http://127.0.0.1:{port}", service)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def service(plant_store: PlantDataStore, instance: dg.DagsterInstance, tmp_path: Path) -> AutomatedRetrainingService:
    return AutomatedRetrainingService(plant_store=plant_store, instance=instance, webserver_url=None,
                                      model_registry=ModelRegistryResource(registry_dir=str(tmp_path / "registry")))


@pytest.fixture
def api(service: AutomatedRetrainingService) -> Iterator[Api]:
    yield from _serve(service)


def _is_error(body: Any, kind: str) -> bool:
    return set(body) == {"error"} and set(body["error"]) == ERROR_KEYS and body["error"]["type"] == kind


def test_schedule_routes_speak_the_spec_shapes(api: Api) -> None:
    status, added = api.call("POST", f"{PREFIX}/retraining/schedule", {
        "model_type": "climate_optimizer", "schedule_type": "weekly", "schedule_day": 2, "schedule_time": "03:00",
        "min_samples": 100})
    assert status == 201 and added == {"job_id": 1, "message": "Retraining job scheduled"}
    status, listed = api.call("GET", f"{PREFIX}/retraining/schedule")
    job = listed["jobs"][0]
    assert status == 200 and job["schedule_config"] == {"day": 2, "time": "03:00", "timezone": "UTC"}
    assert job["next_run"].endswith("T03:00:00Z") and job["last_run"] is None
    assert api.call("DELETE", f"{PREFIX}/retraining/schedule/1") == (200, {"message": "Retraining job removed"})
    status, body = api.call("DELETE", f"{PREFIX}/retraining/schedule/1")
    assert status == 404 and _is_error(body, "not_found") and body["error"]["field"] == "job_id"


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"model_type": "disease", "schedule_type": "weekly", "schedule_day": 9}, 422, "schedule_day"),
    ({"model_type": "disease", "schedule_type": "daily", "schedule_time": "03:00\n"}, 422, "schedule_time"),
    ({"model_type": "Disease", "schedule_type": "daily"}, 422, "model_type"),
    ({"model_type": "disease", "schedule_type": "on_drift", "drift_threshold": -1}, 422, "drift_threshold"),
    ({"model_type": "disease", "schedule_type": "daily", "timezone": "America"}, 422, "timezone"),
    ({"model_type": "disease", "schedule_type": "daily", "min_samples": 10**30}, 422, "min_samples"),
    ({"model_type": "disease", "schedule_type": "weekly", "schedule_day": "2"}, 422, "schedule_day"),
    ({"model_type": "disease", "schedule_type": "daily", "colour": "green"}, 422, "colour"),
    ({"schedule_type": "daily"}, 422, "model_type"),
    ([1, 2], 422, "body"),
])
def test_a_refused_job_answers_with_the_field_and_stores_nothing(api: Api, body: Any, status: int, field: str) -> None:
    got, answer = api.call("POST", f"{PREFIX}/retraining/schedule", body)
    assert got == status and _is_error(answer, "invalid_field"), answer
    assert answer["error"]["field"] == field and answer["error"]["allowed"]
    assert api.service.jobs.list() == []


def test_malformed_json_is_a_400(api: Api) -> None:
    status, body = api.call("POST", f"{PREFIX}/retraining/schedule", raw=b'{"model_type": ')
    assert status == 400 and _is_error(body, "bad_request")
    status, body = api.call("GET", "/api/v1/ai/nothing-here")
    assert status == 404 and _is_error(body, "not_found")


def test_models_versions_audit_trail_and_rollback(api: Api) -> None:
    registry = api.service.registry
    for _ in range(2):
        registry.promote(MODEL, registry.register_model(MODEL, _tiny_model(), _metadata()).version, reason="test")
    status, models = api.call("GET", f"{PREFIX}/models")
    summary = {m["model_type"]: m for m in models["models"]}
    assert status == 200 and summary[MODEL]["active_version"] == "1.1.0" and summary["growth_stage"]["versions"] == 0
    status, details = api.call("GET", f"{PREFIX}/models/{MODEL}")
    assert [v["version"] for v in details["versions"]] == ["1.1.0", "1.0.0"]
    assert [e["event"] for e in details["audit_trail"]].count("promoted") == 2
    status, body = api.call("POST", f"{PREFIX}/models/{MODEL}/rollback", {"to_version": ""})
    assert status == 422 and body["error"]["field"] == "to_version"
    assert registry.get_active_version(MODEL) == "1.1.0"
    status, body = api.call("POST", f"{PREFIX}/models/{MODEL}/rollback", {"reason": "bad predictions"})
    assert (status, body) == (200, {"model_type": MODEL, "from_version": "1.1.0", "to_version": "1.0.0"})
    status, body = api.call("POST", f"{PREFIX}/models/{MODEL}/rollback")
    assert status == 409 and _is_error(body, "registry_conflict") and registry.get_active_version(MODEL) == "1.0.0"
    status, body = api.call("GET", f"{PREFIX}/models/durian")
    assert status == 404 and _is_error(body, "not_found") and "disease" in body["error"]["allowed"]


def test_retrain_checks_come_before_queuing(api: Api) -> None:
    status, body = api.call("POST", f"{PREFIX}/retrain/durian?force=true")
    assert status == 404 and body["error"]["field"] == "model_type"
    status, body = api.call("POST", f"{PREFIX}/retrain/{MODEL}?force=maybe")
    assert status == 422 and body["error"]["field"] == "force"
    status, body = api.call("POST", f"{PREFIX}/retrain/{MODEL}?force=true&min_samples=1000000")
    assert status == 422 and _is_error(body, "insufficient_samples")
    status, body = api.call("POST", f"{PREFIX}/retrain/{MODEL}?force=true&time_range=last_90")
    assert status == 422 and body["error"]["field"] == "time_range"
    status, body = api.call("POST", f"{PREFIX}/retrain/{MODEL}?force=true")
    assert status == 503 and _is_error(body, "webserver_unavailable")
    assert api.service.instance.get_runs() == []


def test_a_retrain_already_in_flight_is_a_409_with_its_run_id(api: Api) -> None:
    queued = api.service.instance.create_run_for_job(
        api.service.definitions().resolve_job_def(RETRAIN_JOB), tags={PARTITION_TAG: MODEL})
    # never launched, the run stays NOT_STARTED: in flight, as a queued run is
    status, body = api.call("POST", f"{PREFIX}/retrain/{MODEL}?force=true")
    assert status == 409 and _is_error(body, "retrain_in_progress") and body["error"]["run_id"] == queued.run_id


def test_runs_history_and_health(api: Api) -> None:
    status, body = api.call("GET", f"{PREFIX}/retraining/runs/not-a-run")
    assert status == 404 and body["error"]["field"] == "run_id"
    assert api.call("GET", f"{PREFIX}/retraining/history") == (200, {"runs": []})
    status, body = api.call("GET", f"{PREFIX}/retraining/history?model_type=durian")
    assert status == 422 and body["error"]["field"] == "model_type"
    status, health = api.call("GET", f"{PREFIX}/health")
    assert status == 200 and health["status"] == "degraded" and health["checks"]["plant_database"] == "ok"
    assert health["checks"]["webserver"].startswith("not configured")


def test_with_a_token_every_change_needs_it(service: AutomatedRetrainingService) -> None:
    for api in _serve(service, token="s3cret"):
        job = {"model_type": MODEL, "schedule_type": "daily"}
        status, body = api.call("POST", f"{PREFIX}/retraining/schedule", job)
        assert status == 401 and _is_error(body, "unauthorized")
        status, _ = api.call("POST", f"{PREFIX}/retraining/schedule", job, headers={"Authorization": "Bearer nope"})
        assert status == 401 and service.jobs.list() == []
        assert api.call("DELETE", f"{PREFIX}/retraining/schedule/1")[0] == 401
        assert api.call("POST", f"{PREFIX}/models/{MODEL}/rollback")[0] == 401
        assert api.call("POST", f"{PREFIX}/retrain/{MODEL}?force=true")[0] == 401
        assert api.call("GET", f"{PREFIX}/retraining/schedule")[0] == 200
        status, _ = api.call("POST", f"{PREFIX}/retraining/schedule", job, headers={"Authorization": "Bearer s3cret"})
        assert status == 201 and len(service.jobs.list()) == 1


@pytest.mark.parametrize(("host", "token", "allowed"), [
    ("127.0.0.1", None, True), ("::1", None, True), ("localhost", None, True),
    ("0.0.0.0", None, False), ("192.168.1.20", None, False), ("0.0.0.0", "s3cret", True),
])
def test_without_a_token_the_api_binds_only_to_loopback(host: str, token: str | None, allowed: bool) -> None:
    if allowed:
        check_bind(host, token)
    else:
        with pytest.raises(InvalidFieldError, match="host"):
            check_bind(host, token)


def test_openapi_documents_every_route_and_the_error_shape(api: Api) -> None:
    status, spec = api.call("GET", "/openapi.json")
    paths = spec["paths"]
    assert status == 200 and {f"{PREFIX}/retrain/{{model_type}}", f"{PREFIX}/retraining/schedule",
                              f"{PREFIX}/retraining/schedule/{{job_id}}", f"{PREFIX}/retraining/runs/{{run_id}}",
                              f"{PREFIX}/models/{{model_type}}", f"{PREFIX}/models/{{model_type}}/rollback",
                              f"{PREFIX}/retraining/history", f"{PREFIX}/health"} <= set(paths)
    assert set(spec["components"]["schemas"]["ErrorDetail"]["properties"]) == ERROR_KEYS
    assert "422" in paths[f"{PREFIX}/retraining/schedule"]["post"]["responses"]


def test_fuzzed_requests_never_get_a_500_and_every_refusal_is_documented_and_changes_nothing(api: Api) -> None:
    """Schemathesis generates valid and invalid requests for every operation of our OpenAPI document."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable

    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    registry = api.service.registry
    registry.promote(MODEL, registry.register_model(MODEL, _tiny_model(), _metadata()).version, reason="test")
    seen: dict[int, int] = {}

    def state() -> tuple[Any, ...]:
        return (api.service.jobs.list(), registry.list_versions(), len(registry.audit_trail()))

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @settings(max_examples=15, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case: schemathesis.Case) -> None:
                before = state()
                response = case.call(base_url=api.url, timeout=60)
                seen[response.status_code] = seen.get(response.status_code, 0) + 1
                assert response.status_code < 500 or response.status_code == 503, case.as_curl_command()
                if response.status_code >= 400:
                    body = response.json()
                    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
                    assert state() == before, f"refused but changed state: {case.as_curl_command()}"

            try:
                check()
            except Unsatisfiable:  # an operation without parameters has no invalid request to generate
                assert mode == schemathesis.GenerationMode.NEGATIVE
    assert {200, 404, 422} <= set(seen), seen  # the fuzzer reached both success and refusals
