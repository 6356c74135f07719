"""The running Dagster webserver, as our code talks to it: GraphQL over HTTP.

Runs that must obey the instance's queue (its per-model-type limit, its two-runs-at-once cap) are
launched through the webserver, the way the UI's Materialize button launches them; the daemon
then dequeues them. The same GraphQL endpoint reloads our code location after a job change, so
new schedules show at once. Plain `urllib`: two mutations do not justify another client library.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from retraining_pipelines.errors import RetrainingError

LOCATION_NAME = "retraining_pipelines"
REPOSITORY_NAME = "__repository__"  # what Dagster calls the repository of a `Definitions` object
WEBSERVER_URL_ENV = "DAGSTER_WEBSERVER_URL"
TIMEOUT_S = 60

RELOAD = """mutation Reload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry { name }
    ... on PythonError { message }
  }
}"""
LAUNCH = """mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}"""


class WebserverUnavailable(RetrainingError):
    """No Dagster webserver answers at the configured URL, so nothing could be queued."""


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `data` of one GraphQL request; `WebserverUnavailable` when the webserver cannot be reached."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{url.rstrip('/')}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        answer = _answer(request)
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as err:
        raise WebserverUnavailable(f"No Dagster webserver at {url}: {err}. Start it with scripts/run, or set "
                                   f"{WEBSERVER_URL_ENV} to where it runs.") from None
    if answer.get("errors"):
        raise RetrainingError(f"The Dagster webserver at {url} refused the request: {answer['errors']}")
    return answer["data"]


def _answer(request: urllib.request.Request) -> dict[str, Any]:
    """The JSON answer; Dagster sends a PythonError result with HTTP 500 and the error in the body."""
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        body = json.load(err)
        if not isinstance(body, dict) or "data" not in body:
            raise
        return body


def reload_location(url: str) -> bool:
    """Reload our code location (new or removed schedules show at once); True when it reloaded."""
    answer = graphql(url, RELOAD, {"name": LOCATION_NAME})["reloadRepositoryLocation"]
    return answer.get("__typename") == "WorkspaceLocationEntry"


def launch_run(url: str, job_name: str, run_config: dict[str, Any], tags: dict[str, str]) -> str:
    """Queue a run of one of our jobs (as the UI does); returns its run id."""
    params = {
        "selector": {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY_NAME, "jobName": job_name},
        "runConfigData": run_config,
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }
    answer = graphql(url, LAUNCH, {"params": params})["launchRun"]
    if answer["__typename"] != "LaunchRunSuccess":
        detail = answer.get("message") or answer.get("errors") or answer["__typename"]
        raise RetrainingError(f"The Dagster webserver did not launch {job_name}: {detail}")
    return answer["run"]["runId"]
