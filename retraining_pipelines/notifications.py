"""Notifications: events pushed to an append-only log and, when configured, a webhook.

Pushing beats polling for the app engineer. The log under DAGSTER_HOME always gets the event;
a webhook (Slack-style JSON POST) is best effort with a timeout and retries - a failing webhook
is logged and never fails a retrain.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from retraining_pipelines.errors import InvalidFieldError
from retraining_pipelines.promotion import RetrainingResult
from retraining_pipelines.settings import dagster_home

logger = logging.getLogger(__name__)
EVENT_TYPES = ("model_retrained", "model_rejected", "model_rolled_back", "retrain_failed", "drift_detected")


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
        message = (f"Model rejected: {result.model_type} v{result.new_version} (accuracy: {new_acc:.2%}); "
                   f"v{result.old_version} stays active - {result.reason}")
    return payload, message


class Notifier(dg.ConfigurableResource):
    """Where events go. The log always; the webhook when `webhook_url` (or $NOTIFY_WEBHOOK_URL) is set."""

    webhook_url: str | None = Field(default=None, description="POST JSON here; unset: $NOTIFY_WEBHOOK_URL.")
    log_path: str | None = Field(default=None, description="JSON-lines log; unset: DAGSTER_HOME/notifications.jsonl")
    channel: str = "admin"
    timeout_seconds: float = 5.0
    retries: int = 2

    @property
    def log_file(self) -> Path:
        return Path(self.log_path) if self.log_path else dagster_home() / "notifications.jsonl"

    def send(self, payload: dict[str, Any], message: str) -> bool:
        """Record the event; True when every configured sink took it."""
        if payload.get("type") not in EVENT_TYPES:
            raise InvalidFieldError("type", payload.get("type"), EVENT_TYPES)
        event = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "channel": self.channel,
                 "message": message, **payload}
        self._append(event)
        url = self.webhook_url or os.environ.get("NOTIFY_WEBHOOK_URL")
        return self._post(url, event) if url else True

    def read_log(self) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line.strip()]

    def _append(self, event: dict[str, Any]) -> None:
        """One line per event; a lock keeps concurrent runs from interleaving lines."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.write(json.dumps(event, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _post(self, url: str, event: dict[str, Any]) -> bool:
        body = json.dumps(event, default=str).encode()
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                    if response.status < 300:
                        return True
            except (urllib.error.URLError, TimeoutError, OSError) as err:
                logger.warning("webhook %s failed (attempt %d): %s", url, attempt + 1, err)
            time.sleep(min(0.2 * 2**attempt, 2.0))
        logger.error("webhook %s gave up after %d attempts; event kept in %s", url, self.retries + 1, self.log_file)
        return False


@dg.run_failure_sensor(
    name="retrain_failure_notifier",
    description="Sends a retrain_failed notification when a retraining run fails.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def retrain_failure_notifier(context: dg.RunFailureSensorContext, notifier: Notifier) -> None:
    run = context.dagster_run
    model_type = run.tags.get("dagster/partition", "unknown")
    steps = context.get_step_failure_events()
    error = "; ".join(step_failure_reason(e) for e in steps) or context.failure_event.message
    notifier.send(
        {"type": "retrain_failed", "model_type": model_type, "run_id": run.run_id, "job": run.job_name,
         "error": error},
        f"Retraining failed: {model_type} (run {run.run_id[:8]}): {error}",
    )


def step_failure_reason(event: dg.DagsterEvent) -> str:
    """A failed step's own words: the `Failure` description we raised, else the error message."""
    data = event.step_failure_data
    described = data.user_failure_data.description if data.user_failure_data else None
    return f"{event.step_key}: {described or (data.error.message.strip() if data.error else 'failed')}"
