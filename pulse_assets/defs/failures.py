"""The failure handler in Dagster: classify, record, alert, and re-execute with backoff.

``failure_sensor`` (a run failure sensor) reads each failed run's step failures from the
event log. Dagster keeps no live exception there, only each chain link's class name and the
line Python wrote for it (``module.QualName: text``), which
:meth:`~pulse_assets.reliability.failures.Classifier.classify_error_info` maps to the
taxonomy by type. It then decides per step (``errors.classes`` in config), writes the
decisions to the ``error_log`` table (redacted), tags the failed run, and posts an alert
to ``PULSE_ALERT_WEBHOOK_URL`` at ``errors.notify_min_severity`` and above.

``failure_retry_sensor`` launches each scheduled re-execution once its backoff is over: a
run of the failed run's unfinished assets (failed, or planned and never materialized: what
"re-execute from failure" runs) on the same partition or range, tagged with its root run
and attempt, and with a halved ``pulse/batch_size`` after a GPU out-of-memory. Attempts are
counted in the error_log, so a source that stays down ends in one alert when they run out,
not in a storm of runs. The run key (root run and attempt) lets Dagster drop a duplicate.

A step failure hook would see the live exception, but the serialized chain already names
every type in it, and a hook would need the SQL store in every run; the sensor sees all
runs, including those killed before a hook could run (failed by the ``dead_run_sensor``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime

import dagster as dg

from pulse_assets.config import ErrorHandlingSettings, Settings
from pulse_assets.defs.resources import SqlStoreResource
from pulse_assets.defs.tags import BATCH_SIZE_TAG, RETRIED_BY_TAG, batch_size_from_tags
from pulse_assets.reliability.error_log import AlreadyRecorded, ErrorLog, ErrorLogEntry
from pulse_assets.reliability.failures import (
    Action,
    Classification,
    Classifier,
    ErrorLink,
    FailedStep,
    FailureClass,
    RunDecision,
)
from pulse_assets.reliability.handler import Handled, RunFailure, handle_run_failure

FAILURE_SENSOR = "failure_sensor"
RETRY_SENSOR = "failure_retry_sensor"
RETRY_ROOT_TAG = "pulse/retry_root"
RETRY_ATTEMPT_TAG = "pulse/retry_attempt"
RETRY_OF_TAG = "pulse/retry_of"
FAILURE_CLASS_TAG = "pulse/failure_class"
QUARANTINED_SOURCE_TAG = "pulse/quarantined_source"
PARTITION_TAG = "dagster/partition"
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
RAW_GROUP_PREFIX = "raw"


def _planned_by_step(instance: dg.DagsterInstance, run_id: str) -> dict[str, set[dg.AssetKey]]:
    planned: dict[str, set[dg.AssetKey]] = {}
    for record in instance.all_logs(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ):
        event = record.dagster_event
        if event is not None and event.asset_key is not None:
            planned.setdefault(event.step_key or "", set()).add(event.asset_key)
    return planned


def source_of(keys: set[dg.AssetKey]) -> str | None:
    """The source a raw asset ingests (``raw/<source>``), else None."""
    raw = sorted(k.path[1] for k in keys if len(k.path) == 2 and k.path[0] == RAW_GROUP_PREFIX)
    return raw[0] if raw else None


def _no_error(message: str) -> Classification:
    """A failure Dagster recorded without an exception (a run marked failed from outside)."""
    return Classification(FailureClass.UNKNOWN, "none", (ErrorLink("none", message),))


def run_failure(
    context: dg.RunFailureSensorContext, batch_size: int, classifier: Classifier
) -> RunFailure:
    """The failed run as the handler reads it: one FailedStep per failed step, or one for
    the run when it failed outside any step."""
    run = context.dagster_run
    planned = _planned_by_step(context.instance, run.run_id)
    steps = []
    for event in context.get_step_failure_events():
        info = event.step_failure_data.error
        found = classifier.classify_error_info(info) if info else _no_error(event.message or "")
        keys = planned.get(event.step_key or "", set())
        steps.append(FailedStep(event.step_key, found, source_of(keys)))
    if not steps:
        failure = context.failure_event
        data = failure.event_specific_data
        info = getattr(data, "error", None)
        found = classifier.classify_error_info(info) if info else _no_error(failure.message or "")
        steps.append(FailedStep(None, found))
    tags = run.tags
    return RunFailure(
        run_id=run.run_id,
        root_run_id=tags.get(RETRY_ROOT_TAG, run.run_id),
        job_name=run.job_name,
        partition=tags.get(PARTITION_TAG) or _range(tags),
        batch_size=batch_size_from_tags(tags, batch_size),
        steps=tuple(steps),
        retried_by=tags.get(RETRIED_BY_TAG),
    )


def _range(tags: Mapping[str, str]) -> str | None:
    start, end = (tags.get(name) for name in RANGE_TAGS)
    return f"{start}...{end}" if start and end else None


def _failed_run_tags(decision: RunDecision) -> dict[str, str]:
    tags = {FAILURE_CLASS_TAG: decision.worst.step.classification.failure_class.value}
    quarantined = {
        d.step.source
        for d in decision.steps
        if d.action is Action.SOURCE_QUARANTINED and d.step.source is not None
    }
    if quarantined:
        tags[QUARANTINED_SOURCE_TAG] = ",".join(sorted(quarantined))
    return tags


def _summary(handled: Handled) -> str:
    parts = [
        f"{d.step.step_key or 'run'}: {d.step.classification.failure_class} "
        f"(severity {d.severity}) -> {d.action}"
        for d in handled.decision.steps
    ]
    retry = handled.decision.retry
    if retry is not None:
        parts.append(f"re-execution {retry.attempt} due at {retry.due_at.isoformat()}")
    return "; ".join(parts)


def evaluate_failure(
    context: dg.RunFailureSensorContext,
    sql_store: SqlStoreResource,
    settings: ErrorHandlingSettings,
    batch_size: int,
    classifier: Classifier,
) -> Handled | None:
    """What the failure sensor does for one failed run (also callable from tests)."""
    failure = run_failure(context, batch_size, classifier)
    log = ErrorLog(sql_store.engine(), message_chars=settings.message_chars)
    handled = handle_run_failure(failure, log, settings, datetime.now(UTC))
    if handled is None:
        context.log.info(f"the failure of run {failure.run_id} was handled already")
        return None
    context.instance.add_run_tags(failure.run_id, _failed_run_tags(handled.decision))
    context.log.info(f"run {failure.run_id}: {_summary(handled)}")
    if handled.alert is not None and handled.alert.action is not Action.NOTIFIED:
        context.log.warning(f"run {failure.run_id}: {handled.alert.message}")
    return handled


def unfinished_assets(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetKey]:
    """What re-execution from failure runs again: the assets of the failed steps and every
    planned asset the run did not materialize."""
    planned = _planned_by_step(instance, run_id)
    done = {
        record.dagster_event.asset_key
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        if record.dagster_event is not None
    }
    failed = {
        record.dagster_event.step_key
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        if record.dagster_event is not None
    }
    everything = set().union(*planned.values()) if planned else set()
    again = (everything - done).union(*(planned.get(s or "", set()) for s in failed))
    return sorted(again, key=lambda key: key.to_user_string())


def retry_tags(parent: dg.DagsterRun, entry: ErrorLogEntry) -> dict[str, str]:
    """The parent's own tags (not Dagster's, not the handler's verdict on it), its partition
    range, and the retry's lineage; a halved batch size when the retry asks for one."""
    own = {
        key: value
        for key, value in parent.tags.items()
        if not key.startswith("dagster/") and key not in (FAILURE_CLASS_TAG, QUARANTINED_SOURCE_TAG)
    }
    ranged = {name: parent.tags[name] for name in RANGE_TAGS if name in parent.tags}
    lineage = {
        RETRY_ROOT_TAG: entry.root_run_id,
        RETRY_ATTEMPT_TAG: str(entry.attempt),
        RETRY_OF_TAG: parent.run_id,
    }
    batch = {BATCH_SIZE_TAG: str(entry.batch_size)} if entry.batch_size else {}
    return own | ranged | lineage | batch


def _launch_entry(entry: ErrorLogEntry, action: Action, message: str) -> ErrorLogEntry:
    return ErrorLogEntry(
        run_id=entry.run_id,
        root_run_id=entry.root_run_id,
        job_name=entry.job_name,
        step_key=entry.step_key,
        partition=entry.partition,
        failure_class=entry.failure_class,
        severity=entry.severity,
        strategy=entry.strategy,
        action=action,
        attempt=entry.attempt,
        exception_type=entry.exception_type,
        message=message,
        batch_size=entry.batch_size,
    )


def retry_request(
    instance: dg.DagsterInstance, entry: ErrorLogEntry, jobs: Collection[str]
) -> tuple[dg.RunRequest | None, ErrorLogEntry]:
    """The re-execution a scheduled retry asks for, in the failed run's job, and the
    error_log row saying so (or why it is abandoned: the failed run was deleted, it left
    nothing to run, or its job is not one of ``jobs``, e.g. an ad-hoc materialization)."""
    parent = instance.get_run_by_id(entry.run_id)
    if parent is None:
        why = f"run {entry.run_id} no longer exists: re-execution {entry.attempt} abandoned"
        return None, _launch_entry(entry, Action.RETRY_ABANDONED, why)
    assets = unfinished_assets(instance, parent.run_id)
    if not assets:
        why = f"run {entry.run_id} planned no asset: nothing to re-execute"
        return None, _launch_entry(entry, Action.RETRY_ABANDONED, why)
    if parent.job_name not in jobs:
        why = (
            f"run {entry.run_id} ran job {parent.job_name}, not one of the project's jobs "
            f"({', '.join(sorted(jobs))}): re-execute it from the UI (Re-execute, from failure)"
        )
        return None, _launch_entry(entry, Action.RETRY_ABANDONED, why)
    request = dg.RunRequest(
        run_key=f"pulse-retry:{entry.root_run_id}:{entry.attempt}",
        job_name=parent.job_name,
        asset_selection=assets,
        partition_key=parent.tags.get(PARTITION_TAG),
        tags=retry_tags(parent, entry),
    )
    listed = ", ".join(key.to_user_string() for key in assets)
    message = f"re-execution {entry.attempt} of {entry.root_run_id} requested: {listed}"
    return request, _launch_entry(entry, Action.RETRY_REQUESTED, message)


def evaluate_retries(
    instance: dg.DagsterInstance, log: ErrorLog, now: datetime, jobs: Collection[str]
) -> list[dg.RunRequest]:
    """Requests for every scheduled re-execution whose backoff is over, each recorded once."""
    requests = []
    for entry in log.due_retries(now):
        request, row = retry_request(instance, entry, jobs)
        try:
            log.record([row])
        except AlreadyRecorded:
            continue
        if request is not None:
            requests.append(request)
    return requests


def build_failure_sensors(
    settings: Settings, jobs: Sequence[dg.UnresolvedAssetJobDefinition]
) -> list[dg.SensorDefinition]:
    """The failure sensor and the retry sensor; retries re-run the failed run's unfinished
    assets in its own job, one of ``jobs`` (a sensor launching asset runs must target jobs,
    and one job cannot mix the daily and the round partitions)."""
    errors = settings.errors
    job_names = frozenset(job.name for job in jobs)
    batch_size = settings.training.optimizer.batch_size
    classifier = Classifier()

    @dg.run_failure_sensor(
        name=FAILURE_SENSOR,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Classifies each failed run by exception type (data, model, storage, network, "
            "system), records the decision in the error_log table, schedules a re-execution "
            "with backoff where the class retries, and alerts the webhook above the severity "
            "threshold (errors.* in config)."
        ),
    )
    def failure_sensor(context: dg.RunFailureSensorContext, sql_store: SqlStoreResource) -> None:
        evaluate_failure(context, sql_store, errors, batch_size, classifier)

    @dg.sensor(
        name=RETRY_SENSOR,
        jobs=list(jobs),
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Launches the re-executions the failure_sensor scheduled, once their backoff is "
            "over: the failed run's unfinished assets on its partitions."
        ),
    )
    def failure_retry_sensor(
        context: dg.SensorEvaluationContext, sql_store: SqlStoreResource
    ) -> dg.SensorResult | dg.SkipReason:
        log = ErrorLog(sql_store.engine(), message_chars=errors.message_chars)
        requests = evaluate_retries(context.instance, log, datetime.now(UTC), job_names)
        if not requests:
            return dg.SkipReason("no scheduled re-execution is due")
        return dg.SensorResult(run_requests=requests)

    return [failure_sensor, failure_retry_sensor]
