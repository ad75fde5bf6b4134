"""Live ingestion: one job per source (``ingest_<source>``, its raw asset and checks) and, for
each source with ``schedule.cron``, a schedule that ingests the day that ended last at each
tick. What follows a new raw partition (features, labels, drift) is the ``pulse_automation``
sensor's; a day still missing later is the freshness sensor's (``defs/freshness.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import dagster as dg

from pulse_assets.config import IngestSchedule, PartitionsConfig, Settings
from pulse_assets.defs.raw import raw_key
from pulse_assets.defs.tags import TRIGGER_TAG
from pulse_assets.reliability.freshness import scheduled_day

SCHEDULE_TRIGGER = "schedule"


def ingest_job_name(source: str) -> str:
    return f"ingest_{source}"


def ingest_schedule_name(source: str) -> str:
    return f"ingest_{source}_schedule"


def status_of(settings: Settings) -> dg.DefaultScheduleStatus:
    running = settings.live.status == "running"
    return dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED


def build_ingest_jobs(settings: Settings) -> list[dg.UnresolvedAssetJobDefinition]:
    """``ingest_<source>`` for every source: what the schedules and the freshness sensor run."""
    return [
        dg.define_asset_job(
            ingest_job_name(name),
            selection=dg.AssetSelection.assets(raw_key(name)),
            description=f"Ingest source {name} for one day (raw/{name} and its quarantine checks).",
        )
        for name in settings.sources
    ]


def _outside(day: str, partitions: PartitionsConfig) -> str | None:
    start, end = partitions.start.isoformat(), partitions.end
    if day < start or (end is not None and day >= end.isoformat()):
        return (
            f"day {day} is outside the partitions [{start}, {end or 'today'}): set "
            "partitions.end to null for live operation"
        )
    return None


def _ingest_schedule(
    name: str, config: IngestSchedule, job: dg.UnresolvedAssetJobDefinition, settings: Settings
) -> dg.ScheduleDefinition:
    partitions = settings.partitions

    @dg.schedule(
        name=ingest_schedule_name(name),
        cron_schedule=config.cron,
        execution_timezone=config.timezone or partitions.timezone,
        job=job,
        default_status=status_of(settings),
        description=f"Ingests source {name}'s day that ended last, at {config.cron!r} "
        f"({config.timezone or partitions.timezone}).",
    )
    def ingest_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        tick = context.scheduled_execution_time or datetime.now(UTC)
        day = scheduled_day(tick, partitions.timezone).isoformat()
        outside = _outside(day, partitions)
        if outside is not None:
            return dg.SkipReason(outside)
        return dg.RunRequest(
            run_key=f"{name}:{day}", partition_key=day, tags={TRIGGER_TAG: SCHEDULE_TRIGGER}
        )

    return ingest_schedule


def build_ingest_schedules(
    settings: Settings, jobs: Sequence[dg.UnresolvedAssetJobDefinition]
) -> list[dg.ScheduleDefinition]:
    """One schedule per source with ``schedule.cron``, running its ``ingest_<source>`` job."""
    by_name = {job.name: job for job in jobs}
    return [
        _ingest_schedule(name, source.schedule, by_name[ingest_job_name(name)], settings)
        for name, source in settings.sources.items()
        if source.schedule is not None
    ]
