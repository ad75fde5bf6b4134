"""The two clocks: daily partitions (a day of data) and round partitions (a training round)."""

from __future__ import annotations

import dagster as dg

from pulse_assets.config import PartitionsConfig, Settings

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def daily_partitions(config: PartitionsConfig) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(
        start_date=config.start.isoformat(),
        end_date=config.end.isoformat() if config.end else None,
        timezone=config.timezone,
    )


def range_tags(first_key: str, last_key: str) -> dict[str, str]:
    """Run tags that make one run cover partitions ``first_key..last_key`` (inclusive)."""
    return {RANGE_START_TAG: first_key, RANGE_END_TAG: last_key}


ROUND_CRON = {"weekly": "0 0 * * 1", "monthly": "0 0 1 * *", "quarterly": "0 0 1 1,4,7,10 *"}
ROUND_DAYS = {"weekly": 7, "monthly": 31, "quarterly": 92}


def round_partitions(settings: Settings) -> dg.TimeWindowPartitionsDefinition:
    """Training rounds (weekly, monthly or quarterly) over the same span as the days.

    A round is trained when it starts (its cutoff is its first day), so the round that has
    just begun is a partition (``end_offset=1``): ``round_schedule``, at the start of June,
    runs the June round, not May's. With a configured end, the rounds stop there."""
    cadence = settings.rounds.cadence
    end = settings.partitions.end
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=ROUND_CRON[cadence],
        start=settings.rounds.start.isoformat(),
        end=end.isoformat() if end else None,
        fmt="%Y-%m-%d",
        timezone=settings.partitions.timezone,
        end_offset=1,
    )


def rounds_covering(days: int, settings: Settings) -> int:
    """How many rounds back a window of ``days`` calendar days reaches (at least one)."""
    return -(-days // ROUND_DAYS[settings.rounds.cadence]) + 1
