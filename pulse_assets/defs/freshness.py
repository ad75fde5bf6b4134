"""The freshness sensor in Dagster: reads each watched raw partition from the instance (is it
materialized, is a run ingesting it, how did the episode's last run end), lets
:func:`~pulse_assets.reliability.freshness.plan_tick` decide, and applies the plan: run
requests of ``ingest_<source>`` for the partition, the give-ups in the ``error_log`` with
their alert, the cursor.

Its runs carry ``pulse/retried_by=freshness_sensor``: the failure handler records their
failures (classified like any other) but leaves the re-execution and the alert to this sensor,
so a source that stays down ends in one alert, not one per attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg

from pulse_assets.config import Settings
from pulse_assets.defs.live import ingest_job_name
from pulse_assets.defs.raw import raw_key
from pulse_assets.defs.resources import SqlStoreResource
from pulse_assets.defs.tags import RETRIED_BY_TAG, TRIGGER_TAG
from pulse_assets.reliability.error_log import ErrorLog
from pulse_assets.reliability.failures import Classifier
from pulse_assets.reliability.freshness import (
    SENSOR_NAME,
    AttemptOutcome,
    CursorError,
    FailureSummary,
    FreshnessCursor,
    GiveUp,
    PartitionRef,
    Request,
    Watched,
    plan_tick,
    record_give_up,
    watched_days,
)

FRESHNESS_TRIGGER = "freshness"
EPISODE_TAG = "pulse/freshness_episode"
ATTEMPT_TAG = "pulse/freshness_attempt"
PARTITION_TAG = "dagster/partition"
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _now() -> datetime:
    return datetime.now(UTC)


def _materialized(instance: dg.DagsterInstance, source: str, days: list[str]) -> set[str]:
    """Which of ``days`` ``raw/<source>`` has a materialization of."""
    return instance.get_materialized_partitions(raw_key(source)) & set(days)


def _ingesting(instance: dg.DagsterInstance, source: str, day: str) -> bool:
    """Whether a queued or running run ingests ``raw/<source>`` for ``day`` (this sensor's,
    a schedule's or one launched by hand)."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS, tags={PARTITION_TAG: day}))
    key = raw_key(source)
    return any(
        run.job_name == ingest_job_name(source) or key in (run.asset_selection or set())
        for run in runs
    )


def _failure(
    instance: dg.DagsterInstance, run_id: str, classifier: Classifier
) -> FailureSummary | None:
    """The run's first step failure (else its run failure), classified by type."""
    for event_type in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE):
        for record in instance.all_logs(run_id, of_type=event_type):
            event = record.dagster_event
            info = getattr(event.event_specific_data, "error", None) if event else None
            if info is None:
                continue
            found = classifier.classify_error_info(info)
            return FailureSummary(found.failure_class, found.exception_type, found.describe())
    return None


def _latest_run(
    instance: dg.DagsterInstance, episode: str, classifier: Classifier
) -> tuple[bool, AttemptOutcome | None]:
    """Whether the episode's latest run is still going, and how it ended if it has."""
    records = instance.get_run_records(filters=dg.RunsFilter(tags={EPISODE_TAG: episode}), limit=1)
    if not records:
        return False, None
    run = records[0].dagster_run
    if run.status in IN_PROGRESS:
        return True, None
    end = records[0].end_time
    failed = run.status == dg.DagsterRunStatus.FAILURE
    return False, AttemptOutcome(
        run_id=run.run_id,
        attempt=int(run.tags.get(ATTEMPT_TAG, "0")),
        ended_at=datetime.fromtimestamp(end, UTC) if end else None,
        failure=_failure(instance, run.run_id, classifier) if failed else None,
    )


def _first_run_id(instance: dg.DagsterInstance, episode: str) -> str | None:
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={EPISODE_TAG: episode}), limit=1, ascending=True
    )
    return records[0].dagster_run.run_id if records else None


def observe(
    instance: dg.DagsterInstance,
    settings: Settings,
    cursor: FreshnessCursor,
    now: datetime,
    classifier: Classifier,
) -> list[Watched]:
    """Every source's watched days as the instance has them."""
    partitions = settings.partitions
    lookback = timedelta(days=settings.live.lookback_days)
    days = watched_days(partitions.start, partitions.end, partitions.timezone, lookback, now)
    watched = []
    for source in settings.sources:
        done = _materialized(instance, source, [day.partition for day in days])
        for day in days:
            ref = PartitionRef(source, day.partition)
            if day.partition in done:
                watched.append(Watched(ref, day.due_at, materialized=True))
                continue
            episode = cursor.episodes.get(ref.key())
            running, last = (
                _latest_run(instance, episode.label(ref), classifier) if episode else (False, None)
            )
            running = running or _ingesting(instance, source, day.partition)
            watched.append(Watched(ref, day.due_at, False, running, last))
    return watched


def run_request(request: Request) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{SENSOR_NAME}:{request.episode}:{request.attempt}",
        job_name=ingest_job_name(request.ref.source),
        partition_key=request.ref.partition,
        tags={
            TRIGGER_TAG: FRESHNESS_TRIGGER,
            RETRIED_BY_TAG: SENSOR_NAME,
            EPISODE_TAG: request.episode,
            ATTEMPT_TAG: str(request.attempt),
        },
    )


def _read_cursor(context: dg.SensorEvaluationContext) -> FreshnessCursor:
    try:
        return FreshnessCursor.parse(context.cursor)
    except CursorError as error:
        context.log.warning(
            f"{SENSOR_NAME}: {error}. Starting from an empty cursor: overdue partitions open new "
            "episodes (their attempts count from 1 again)"
        )
        return FreshnessCursor()


def _give_up(
    context: dg.SensorEvaluationContext, give_up: GiveUp, log: ErrorLog, settings: Settings
) -> None:
    first = _first_run_id(context.instance, give_up.episode)
    recorded = record_give_up(
        give_up, first, ingest_job_name(give_up.ref.source), log, settings.errors
    )
    if recorded is None:
        context.log.info(f"the give-up of episode {give_up.episode} was recorded already")
        return
    alert = recorded.alert
    said = f"; alert: {alert.action} ({alert.message})" if alert else "; below the alert threshold"
    context.log.warning(f"{recorded.entry.message}{said}")


def build_freshness_sensor(
    settings: Settings,
    jobs: Sequence[dg.UnresolvedAssetJobDefinition],
    clock: Callable[[], datetime] = _now,
) -> dg.SensorDefinition:
    """The freshness sensor over every source's ``ingest_<source>`` job in ``jobs``."""
    live, errors = settings.live, settings.errors
    window = timedelta(hours=settings.freshness.raw_warn_hours)
    classifier = Classifier()
    running = live.status == "running"

    @dg.sensor(
        name=SENSOR_NAME,
        jobs=list(jobs),
        minimum_interval_seconds=live.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING
        if running
        else dg.DefaultSensorStatus.STOPPED,
        description=(
            f"Re-ingests raw partitions still missing {settings.freshness.raw_warn_hours:g} h "
            f"after their day ended (the last {live.lookback_days} days): at most "
            f"{live.max_attempts} run(s) per partition with exponential backoff, then one "
            "error_log row and one alert (live.* in config)."
        ),
    )
    def freshness_sensor(
        context: dg.SensorEvaluationContext, sql_store: SqlStoreResource
    ) -> dg.SensorResult:
        now = clock()
        cursor = _read_cursor(context)
        watched = observe(context.instance, settings, cursor, now, classifier)
        plan = plan_tick(cursor, watched, now, window, live, errors)
        if plan.give_ups:
            log = ErrorLog(sql_store.engine(), message_chars=errors.message_chars)
            for give_up in plan.give_ups:
                _give_up(context, give_up, log, settings)
        summary = plan.summary()
        if summary:
            context.log.info(summary)
        requests = [run_request(request) for request in plan.requests]
        skip = None if requests else dg.SkipReason(summary or "no watched raw partition is overdue")
        return dg.SensorResult(
            run_requests=requests, skip_reason=skip, cursor=plan.cursor.serialize()
        )

    return freshness_sensor
