"""Handle one failed run: decide per failed step, record in the error_log, alert.

The plan's ``RecursiveTrainingErrorHandler.handle_error`` for a whole run, without Dagster:
the caller (``defs/failures.py``) reads the failed run into a :class:`RunFailure` and
applies the decision (tags, re-execution requests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pulse_assets.reliability.error_log import AlreadyRecorded, ErrorLog, ErrorLogEntry
from pulse_assets.reliability.failures import (
    WEBHOOK_ENV,
    Action,
    FailedStep,
    Redactor,
    RetryLineage,
    RetryPlan,
    RunDecision,
    StepDecision,
    decide,
)
from pulse_assets.reliability.webhook import post_json

if TYPE_CHECKING:
    from pulse_assets.config import ErrorHandlingSettings


@dataclass(frozen=True)
class RunFailure:
    run_id: str
    root_run_id: str  # the run this one re-executes (itself when it is not a re-execution)
    job_name: str | None
    partition: str | None
    batch_size: int  # the training batch size the run used
    steps: tuple[FailedStep, ...]
    retried_by: str | None = None  # a sensor that re-requests this run's work (its tag)


@dataclass(frozen=True)
class Handled:
    decision: RunDecision
    entries: list[ErrorLogEntry]
    alert: ErrorLogEntry | None  # notified, notify_failed or notify_skipped; None: below threshold


def handle_run_failure(
    failure: RunFailure, log: ErrorLog, settings: ErrorHandlingSettings, now: datetime
) -> Handled | None:
    """Decide, record and alert; None when this run's failure was handled before."""
    if log.decided(failure.run_id):
        return None
    root = failure.root_run_id
    lineage = RetryLineage(
        root, log.retries_scheduled(root), failure.batch_size, failure.retried_by
    )
    decision = decide(failure.steps, lineage, settings, now)
    try:
        entries = log.record([_entry(failure, step, decision.retry) for step in decision.steps])
    except AlreadyRecorded:
        return None
    alert = None
    if decision.notify(settings.notify_min_severity):
        alert = _alert(failure, decision, entries, log, settings)
    return Handled(decision, entries, alert)


def _entry(failure: RunFailure, step: StepDecision, retry: RetryPlan | None) -> ErrorLogEntry:
    scheduled = step.action is Action.RETRY_SCHEDULED and retry is not None
    classification = step.step.classification
    return ErrorLogEntry(
        run_id=failure.run_id,
        root_run_id=failure.root_run_id,
        job_name=failure.job_name,
        step_key=step.step.step_key,
        partition=failure.partition,
        failure_class=classification.failure_class.value,
        severity=step.severity,
        strategy=step.strategy.value,
        action=step.action,
        attempt=step.attempt,
        exception_type=classification.exception_type,
        message=f"{step.note}\n{classification.describe()}",
        source=step.step.source,
        batch_size=retry.batch_size if scheduled and retry else None,
        due_at=retry.due_at if scheduled and retry else None,
    )


def alert_payload(
    failure: RunFailure, decision: RunDecision, entries: list[ErrorLogEntry]
) -> dict[str, Any]:
    """The webhook body: the worst failed step's figures and its (redacted) message."""
    worst = decision.worst
    logged = entries[decision.steps.index(worst)]
    step = worst.step.step_key or "the run"
    title = (
        f"Pulse: {worst.step.classification.failure_class} (severity {worst.severity}) in "
        f"{step} of run {failure.run_id}: {worst.action}"
    )
    return {
        "text": f"{title}\n{logged.message}",
        "title": title,
        "severity": worst.severity,
        "failure_class": worst.step.classification.failure_class.value,
        "strategy": worst.strategy.value,
        "action": worst.action.value,
        "attempt": worst.attempt,
        "run_id": failure.run_id,
        "root_run_id": failure.root_run_id,
        "job_name": failure.job_name,
        "step_key": worst.step.step_key,
        "partition": failure.partition,
        "message": logged.message,
        "error_log_ids": [entry.id for entry in entries],
    }


def _redacted(payload: dict[str, Any], redact: Redactor) -> dict[str, Any]:
    return {k: redact(v) if isinstance(v, str) else v for k, v in payload.items()}


def _alert(
    failure: RunFailure,
    decision: RunDecision,
    entries: list[ErrorLogEntry],
    log: ErrorLog,
    settings: ErrorHandlingSettings,
) -> ErrorLogEntry | None:
    worst = decision.worst
    url = os.environ.get(WEBHOOK_ENV)
    if not url:
        action, detail = Action.NOTIFY_SKIPPED, f"{WEBHOOK_ENV} is not set: no alert was sent"
    else:
        payload = _redacted(alert_payload(failure, decision, entries), Redactor.from_environ())
        delivery = post_json(url, payload, settings.webhook_timeout_s)
        action = Action.NOTIFIED if delivery.ok else Action.NOTIFY_FAILED
        detail = f"alert {'sent' if delivery.ok else 'not delivered'}: {delivery.detail}"
    note = ErrorLogEntry(
        run_id=failure.run_id,
        root_run_id=failure.root_run_id,
        job_name=failure.job_name,
        step_key=worst.step.step_key,
        partition=failure.partition,
        failure_class=worst.step.classification.failure_class.value,
        severity=worst.severity,
        strategy=worst.strategy.value,
        action=action,
        attempt=worst.attempt,
        exception_type=worst.step.classification.exception_type,
        message=f"{detail} (severity {worst.severity} >= {settings.notify_min_severity})",
    )
    try:
        return log.record([note])[0]
    except AlreadyRecorded:
        return None
