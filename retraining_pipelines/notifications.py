"""Notifications: events pushed to an append-only log and, when configured, a webhook.

Pushing beats polling for the app engineer. The log under DAGSTER_HOME always gets the event;
a webhook (Slack-style JSON POST) is delivered on a thread of its own, off the retrain's critical
path, with retries inside one *total* deadline per event (a server trickling one byte a second
cannot hold it longer). Notifications never decide a retrain's outcome: `send` does not raise for
a sink's failure - a bad URL, a non-HTTP answer, a full disk - it logs it and records it in
`notification_errors.jsonl` beside the log.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from retraining_pipelines.errors import InvalidFieldError
from retraining_pipelines.io_manager import ModelRegistryResource
from retraining_pipelines.promotion import RetrainingResult
from retraining_pipelines.runs import PARTITION_TAG, settle_candidates, step_failure_reason
from retraining_pipelines.settings import dagster_home

logger = logging.getLogger(__name__)
EVENT_TYPES = ("model_retrained", "model_rejected", "model_rolled_back", "retrain_failed", "drift_detected",
               "drift_unresolved")
_DELIVERIES: set[threading.Thread] = set()


def rolled_back_event(model_type: str, old: str, new: str, reason: str, trigger: str = "manual",
                      run_id: str | None = None) -> tuple[dict[str, Any], str]:
    payload = {"type": "model_rolled_back", "model_type": model_type, "old_version": old, "new_version": new,
               "reason": reason, "trigger": trigger, "run_id": run_id}
    return payload, f"Rolled back {model_type}: v{old} → v{new} ({reason})"


def retrained_event(result: RetrainingResult) -> tuple[dict[str, Any], str]:
    """The spec's `model_retrained` payload and message (or `model_rejected` when gated out)."""
    new_acc = result.new_metrics.get("accuracy")
    payload = {
        "type": "model_retrained" if result.promoted else "model_rejected",
        "model_type": result.model_type,
        "old_version": result.old_version,
        "new_version": result.new_version,
        "old_accuracy": result.old_metrics.get("accuracy"),
        "new_accuracy": new_acc,
        "improvement": None if result.improvement is None else round(result.improvement, 1),
        "reason": result.reason,
        "trigger": result.trigger,
        "run_id": result.run_id,
    }
    if result.promoted:
        message = f"Model retrained: {result.model_type} v{result.new_version} (accuracy: {new_acc:.2%})"
    else:
        kept = f"v{result.active_version} stays active" if result.active_version else "no version is active yet"
        message = (f"Model rejected: {result.model_type} v{result.new_version} (accuracy: {new_acc:.2%}); "
                   f"{kept} - {result.reason}")
    return payload, message


class Notifier(dg.ConfigurableResource):
    """Where events go. The log always; the webhook when `webhook_url` (or $NOTIFY_WEBHOOK_URL) is set."""

    webhook_url: str | None = Field(default=None, description="POST JSON here; unset: $NOTIFY_WEBHOOK_URL.")
    log_path: str | None = Field(default=None, description="JSON-lines log; unset: DAGSTER_HOME/notifications.jsonl")
    channel: str = "admin"
    deadline_seconds: float = Field(default=5.0, description="Total time for one event's webhook delivery, "
                                    "all attempts included.")
    retries: int = 2

    @property
    def log_file(self) -> Path:
        return Path(self.log_path) if self.log_path else dagster_home() / "notifications.jsonl"

    @property
    def error_file(self) -> Path:
        return self.log_file.with_name("notification_errors.jsonl")

    def send(self, payload: dict[str, Any], message: str) -> threading.Thread | None:
        """Record the event and start its webhook delivery; returns the delivery thread (None without a webhook).

        Only an unknown event type raises (a bug in our code); any sink's failure is logged and
        recorded instead.
        """
        if payload.get("type") not in EVENT_TYPES:
            raise InvalidFieldError("type", payload.get("type"), EVENT_TYPES)
        event = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "channel": self.channel,
                 "message": message, **payload}
        try:
            _append_line(self.log_file, event)
        except OSError as err:
            self._record_error(self.error_file, event, f"could not write {self.log_file}: {err}")
        url = self.webhook_url or os.environ.get("NOTIFY_WEBHOOK_URL")
        if not url:
            return None
        thread = threading.Thread(target=self._deliver, args=(url, event, self.error_file), name="notify-webhook",
                                  daemon=False)
        _DELIVERIES.add(thread)
        thread.start()
        return thread

    def read_log(self) -> list[dict[str, Any]]:
        return _read_lines(self.log_file)

    def read_errors(self) -> list[dict[str, Any]]:
        """Every delivery that failed, with the reason (the events themselves are in the log)."""
        return _read_lines(self.error_file)

    def _deliver(self, url: str, event: dict[str, Any], error_file: Path) -> None:
        try:
            error = post_json(url, event, self.deadline_seconds, self.retries)
        except Exception as err:
            error = f"{type(err).__name__}: {err}"
        finally:
            _DELIVERIES.discard(threading.current_thread())
        if error:
            self._record_error(error_file, event, f"webhook {url}: {error}")

    @staticmethod
    def _record_error(error_file: Path, event: dict[str, Any], error: str) -> None:
        logger.error("notification %s not delivered: %s", event.get("type"), error)
        try:
            _append_line(error_file, {"at": datetime.now(UTC).isoformat(timespec="seconds"),
                                           "event": event.get("type"), "model_type": event.get("model_type"),
                                           "run_id": event.get("run_id"), "error": error})
        except OSError as err:
            logger.error("could not record the notification error either: %s", err)


def wait_for_deliveries(timeout: float = 30.0) -> None:
    """Wait for webhook deliveries under way (tests do, between tests). A process needs not: delivery
    threads are not daemons, so it exits once they are done, at most one deadline later."""
    deadline = time.monotonic() + timeout
    for thread in list(_DELIVERIES):
        thread.join(max(0.0, deadline - time.monotonic()))


def post_json(url: str, event: dict[str, Any], deadline_s: float, retries: int) -> str | None:
    """POST `event` with up to `retries` retries inside `deadline_s` in total; None, or why it failed."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"not an http(s) URL: {url!r}"
    body = json.dumps(event, default=str).encode()
    deadline = time.monotonic() + deadline_s
    error = "no attempt made"
    for attempt in range(retries + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return f"deadline of {deadline_s:g} s passed after {attempt} attempt(s): {error}"
        try:
            status = _post_once(parts, body, remaining)
            if status < 300:
                return None
            error = f"HTTP {status}"
        except (OSError, http.client.HTTPException, ValueError) as err:
            error = f"{type(err).__name__}: {err}"
        logger.warning("webhook %s failed (attempt %d): %s", url, attempt + 1, error)
        time.sleep(max(0.0, min(0.2 * 2**attempt, deadline - time.monotonic())))
    return f"gave up after {retries + 1} attempts: {error}"


def _post_once(parts: urllib.parse.SplitResult, body: bytes, budget_s: float) -> int:
    """One POST that cannot outlive `budget_s`: a timer shuts the socket at the deadline."""
    connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = connection_type(parts.hostname, parts.port, timeout=budget_s)
    timer = threading.Timer(budget_s, _shut, args=(conn,))
    timer.daemon = True
    timer.start()
    try:
        path = parts.path or "/"
        conn.request("POST", f"{path}?{parts.query}" if parts.query else path, body=body,
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        timer.cancel()
        conn.close()


def _shut(conn: http.client.HTTPConnection) -> None:
    if conn.sock is not None:
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """One line per record; a lock keeps concurrent runs from interleaving lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(record, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dg.run_failure_sensor(
    name="retrain_failure_notifier",
    description="Sends a retrain_failed notification when a retraining run fails.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def retrain_failure_notifier(context: dg.RunFailureSensorContext, notifier: Notifier,
                             model_registry: ModelRegistryResource) -> None:
    run = context.dagster_run
    model_type = run.tags.get(PARTITION_TAG, "unknown")
    steps = context.get_step_failure_events()
    error = "; ".join(step_failure_reason(e) for e in steps) or context.failure_event.message
    abandoned = settle_candidates(context.instance, model_registry.get())
    notifier.send(
        {"type": "retrain_failed", "model_type": model_type, "run_id": run.run_id, "job": run.job_name,
         "error": error, "abandoned_versions": [v for m, v, _ in abandoned if m == model_type]},
        f"Retraining failed: {model_type} (run {run.run_id[:8]}): {error}",
    )
