"""The spec's REST API (FastAPI on uvicorn): HTTP in front of the service facade, nothing more.

Every route calls `AutomatedRetrainingService`, so a request is checked by the same rules
(`validation.py`) and changes the same stores as the Python API and the CLI. Retrains are queued
on the Dagster instance through the webserver, as the UI queues them, so they show in the UI and
obey the instance's limits (one run per model type, two at once).

Errors are JSON in one shape, `{"error": {"type", "message", "field", "value", "allowed", "run_id"}}`:
400 malformed request, 401 missing or wrong token, 404 unknown model type, job, run or route,
409 conflicts with the current state (a retrain already queued or running, no drift, nothing to
roll back, a damaged model file), 422 a refused value or too little data, 503 a store or the
Dagster webserver unavailable.

Security: with `RETRAINING_API_TOKEN` set, every changing request needs
`Authorization: Bearer <token>`; without one the server only binds to a loopback address.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import os
import time
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from retraining_pipelines.catalog import MODEL_TYPES
from retraining_pipelines.errors import (
    InsufficientSamplesError,
    InvalidFieldError,
    ModelIntegrityError,
    RegistryError,
    RetrainingError,
    RetrainingSkipped,
    RetrainInProgress,
    StorageError,
)
from retraining_pipelines.jobstore import DEFAULT_DRIFT_SIGNAL, DRIFT_SIGNALS, SCHEDULE_TYPES
from retraining_pipelines.service import AutomatedRetrainingService
from retraining_pipelines.webserver import WebserverUnavailable

PREFIX = "/api/v1/ai"
TOKEN_ENV = "RETRAINING_API_TOKEN"
#: How long `wait=true` waits for a queued retrain before answering 202 with its run id.
MAX_WAIT_S = 1800
POLL_S = 1.0


class ErrorDetail(BaseModel):
    type: str = Field(description="invalid_field, not_found, unauthorized, retrain_in_progress, retraining_skipped, "
                      "insufficient_samples, retrain_failed, registry_conflict, model_integrity, "
                      "storage_unavailable, webserver_unavailable, bad_request")
    message: str
    field: str | None = None
    value: Any = None
    allowed: str | None = None
    run_id: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class JobRequest(BaseModel):
    """The spec's body of `POST /retraining/schedule` (JSON types checked here, values by `validation.py`)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model_type: str = Field(description=f"One of: {', '.join(MODEL_TYPES)}")
    schedule_type: str = Field(description=f"One of: {', '.join(SCHEDULE_TYPES)}")
    schedule_day: int | None = Field(default=None, description="weekly: 0 = Monday .. 6 = Sunday")
    schedule_time: str | None = Field(default=None, description="HH:MM (scheduled jobs; default 03:00)")
    drift_threshold: float | None = Field(default=None, description="on_drift: relative accuracy drop in (0, 1)")
    min_samples: int | None = None
    timezone: str = "UTC"
    time_range: str = "last_90d"
    drift_signal: str | None = Field(default=None, description=f"on_drift: which evidence triggers a retrain, one "
                                     f"of {', '.join(DRIFT_SIGNALS)} (default {DEFAULT_DRIFT_SIGNAL})")


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    to_version: str | None = Field(default=None, description="Unset: the previous served version.")
    reason: str = "rollback requested over the REST API"


ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 409, 422, 503)}


class _UnauthorizedError(Exception):
    """A changing request without the configured bearer token (answered 401)."""


def _status_and_type(err: RetrainingError, path_params: dict[str, Any]) -> tuple[int, str]:
    if isinstance(err, RetrainInProgress):
        return 409, "retrain_in_progress"
    if isinstance(err, RetrainingSkipped):
        return 409, "retraining_skipped"
    if isinstance(err, InsufficientSamplesError):
        return 422, "insufficient_samples"
    if isinstance(err, InvalidFieldError):
        return (404, "not_found") if err.field in path_params else (422, "invalid_field")
    if isinstance(err, ModelIntegrityError):
        return 409, "model_integrity"
    if isinstance(err, RegistryError):
        return 409, "registry_conflict"
    if isinstance(err, StorageError):
        return 503, "storage_unavailable"
    if isinstance(err, WebserverUnavailable):
        return 503, "webserver_unavailable"
    return 422, "retrain_failed"


def _json_safe(value: Any) -> Any:
    """Echo a refused value back only as JSON can carry it (NaN and bytes cannot)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return repr(value)


def error_response(status: int, kind: str, message: str, **detail: Any) -> JSONResponse:
    body = {"type": kind, "message": message, **{k: _json_safe(v) for k, v in detail.items()}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(ErrorBody(error=ErrorDetail(**body)).model_dump(), status_code=status, headers=headers)


def _request_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own refusals (a query flag that is not a boolean, a body that is not JSON) in our shape."""
    problems = exc.errors() if isinstance(exc, RequestValidationError) else []
    if not problems:
        return error_response(400, "bad_request", "The request could not be read.")
    first = problems[0]
    if first.get("type") == "json_invalid":
        return error_response(400, "bad_request", f"The body is not valid JSON: {first.get('msg')}")
    field = ".".join(str(part) for part in first.get("loc", ())[1:]) or "body"
    where = first.get("loc", ("",))[0]
    status, kind = (404, "not_found") if where == "path" else (422, "invalid_field")
    return error_response(status, kind, f"Invalid {field}: {first.get('msg')}", field=field,
                          value=first.get("input"), allowed=first.get("msg"))


def create_app(service: AutomatedRetrainingService | None = None, token: str | None = None) -> FastAPI:
    """The REST app over `service` (default: the DAGSTER_HOME one); `token` defaults to $RETRAINING_API_TOKEN."""
    app = FastAPI(title="Automated retraining for plant-growing apps", version="1.0.0",
                  description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    state = {"service": service}
    token = _token(token)

    def svc() -> AutomatedRetrainingService:
        if state["service"] is None:
            state["service"] = AutomatedRetrainingService()
        return state["service"]

    def authorized(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise _UnauthorizedError

    @app.exception_handler(RetrainingError)
    def _service_error(request: Request, err: RetrainingError) -> JSONResponse:
        status, kind = _status_and_type(err, request.path_params)
        detail: dict[str, Any] = {"run_id": getattr(err, "run_id", None)}
        if isinstance(err, InvalidFieldError):
            detail.update(field=err.field, value=err.value, allowed=err.allowed)
        return error_response(status, kind, str(err), **detail)

    @app.exception_handler(_UnauthorizedError)
    def _unauthorized(_: Request, __: Exception) -> JSONResponse:
        return error_response(401, "unauthorized", f"This request changes state: send 'Authorization: Bearer <token>' "
                              f"with the token in {TOKEN_ENV}.")

    app.add_exception_handler(RequestValidationError, _request_error)

    @app.exception_handler(StarletteHTTPException)
    def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "bad_request"}.get(exc.status_code, "bad_request")
        return error_response(exc.status_code, kind, str(exc.detail))

    changes = [Depends(authorized)]
    _routes(app, svc, changes)
    return app


def _routes(app: FastAPI, svc: Any, changes: list[Any]) -> None:
    @app.post(f"{PREFIX}/retrain/{{model_type}}", dependencies=changes, responses={202: {}, **ERRORS},
              summary="Retrain a model type now (the spec's POST /retrain)")
    def retrain(model_type: str, force: bool = False, wait: bool = True,
                min_samples: int | None = Query(default=None), time_range: str = "last_90d",
                timeout: float = Query(default=600, gt=0, le=MAX_WAIT_S)) -> Any:
        """Queue a retrain; with `wait` (default) answer with the spec's result once the gate decided.

        `force=false` first checks drift and answers 409 `retraining_skipped` when there is none.
        A retrain of the same model already queued or running answers 409 with its `run_id`.
        """
        service = svc()
        run_id = service.submit_retrain(model_type, force=force, min_samples=min_samples, time_range=time_range)
        if not wait:
            return _accepted(run_id)
        deadline = time.monotonic() + timeout
        report = service.run_report(run_id)
        while not report.done and time.monotonic() < deadline:
            time.sleep(POLL_S)
            report = service.run_report(run_id)
        if not report.done:
            return _accepted(run_id)
        if report.result is None:
            return error_response(422, "retrain_failed", f"Retraining {model_type} failed (run {run_id}): "
                                  f"{report.error}", run_id=run_id)
        return {**report.result, "run_id": run_id, "outcome": report.outcome}

    @app.get(f"{PREFIX}/retraining/runs/{{run_id}}", responses=ERRORS, summary="A retrain run and its outcome")
    def run(run_id: str) -> dict[str, Any]:
        return svc().run_report(run_id).to_dict()

    @app.get(f"{PREFIX}/retraining/history", responses=ERRORS, summary="Latest retrain runs, newest first")
    def history(model_type: str | None = None, limit: int = Query(default=20, ge=1, le=1000)) -> dict[str, Any]:
        return {"runs": [r.to_dict() for r in svc().history(model_type, limit)]}

    @app.get(f"{PREFIX}/retraining/schedule", responses=ERRORS, summary="The spec's job list")
    def schedule() -> dict[str, Any]:
        return {"jobs": [job.to_dict() for job in svc().get_retraining_schedule()]}

    @app.post(f"{PREFIX}/retraining/schedule", status_code=201, dependencies=changes, responses=ERRORS,
              summary="Add a retraining job (the spec's body)")
    def add_job(job: JobRequest) -> dict[str, Any]:
        job_id = svc().add_job(**job.model_dump())
        return {"job_id": job_id, "message": "Retraining job scheduled"}

    @app.delete(f"{PREFIX}/retraining/schedule/{{job_id}}", dependencies=changes, responses=ERRORS,
                summary="Remove a retraining job")
    def remove_job(job_id: int) -> dict[str, str]:
        svc().remove_job(job_id)
        return {"message": "Retraining job removed"}

    @app.get(f"{PREFIX}/models", responses=ERRORS, summary="Every model type and its active version")
    def models() -> dict[str, Any]:
        return {"models": [svc().model_summary(m) for m in MODEL_TYPES]}

    @app.get(f"{PREFIX}/models/{{model_type}}", responses=ERRORS, summary="Versions and audit trail of a model type")
    def model(model_type: str) -> dict[str, Any]:
        return svc().model_details(model_type)

    @app.post(f"{PREFIX}/models/{{model_type}}/rollback", dependencies=changes, responses=ERRORS,
              summary="Restore the previous (or a named) served version")
    def rollback(model_type: str, body: RollbackRequest | None = None) -> dict[str, str]:
        body = body or RollbackRequest()
        old, new = svc().rollback(model_type, body.to_version, reason=body.reason)
        return {"model_type": model_type, "from_version": old, "to_version": new}

    @app.get(f"{PREFIX}/health", responses=ERRORS, summary="Whether the stores and the Dagster webserver answer")
    def health() -> dict[str, Any]:
        return svc().health()


def _accepted(run_id: str) -> JSONResponse:
    return JSONResponse({"run_id": run_id, "status_url": f"{PREFIX}/retraining/runs/{run_id}"}, status_code=202)


LOOPBACK_NAMES = ("localhost",)


def _token(token: str | None) -> str | None:
    """None: take $RETRAINING_API_TOKEN; the empty string: explicitly no token."""
    return (os.environ.get(TOKEN_ENV) if token is None else token) or None


def check_bind(host: str, token: str | None) -> None:
    """Without a token the API must not be reachable from other machines."""
    if token:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host in LOOPBACK_NAMES
    if not loopback:
        raise InvalidFieldError("host", host, f"a loopback address (127.0.0.1, ::1, localhost) unless {TOKEN_ENV} "
                                "is set")


def build_server(host: str, port: int, service: AutomatedRetrainingService | None = None,
                 token: str | None = None) -> uvicorn.Server:
    """A uvicorn server for the API; refuses a non-loopback host without a token before binding anything."""
    token = _token(token)
    check_bind(host, token)
    config = uvicorn.Config(create_app(service, token), host=host, port=port, log_level="warning")
    return uvicorn.Server(config)
