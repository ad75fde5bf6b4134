"""Daily partitions: each one is a retrodiction window (a day of history)."""

from __future__ import annotations

import dagster as dg

from pulse_assets.config import PartitionsConfig

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
