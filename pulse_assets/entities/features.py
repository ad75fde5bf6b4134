"""Per-entity daily feature rows, point in time: the row of day d reads the entity's values of
the ``trailing_days`` days before d (never d's future, never another entity's)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import polars as pl

from pulse_assets.errors import FeatureError

WEEK = 7
FEATURE_DESCRIPTIONS = {
    "trailing_mean": "mean over the entity's days in [d - trailing_days, d), d excluded",
    "trailing_std": "sample standard deviation over the same days (null under 2 days)",
    "trailing_days_seen": "how many days of that window the entity had a value for",
    "zscore": "(value - trailing_mean) / trailing_std: how unusual day d is for the entity",
    "log_change_7d": "log(value on d / value on d - 7): the change from the same weekday",
}


def entity_day_features(
    raw: pl.DataFrame, column: str, days: Sequence[date], trailing_days: int
) -> pl.DataFrame:
    """One row per entity and day of ``days`` on which ``raw`` has the entity's ``column``:
    the value, its trailing mean, standard deviation and z-score over the ``trailing_days``
    days before, and its log change from seven days before.

    ``raw`` holds ``date``, ``entity`` and ``column``, one row per (entity, date), and must
    reach back ``trailing_days`` before the first day; a statistic whose window has fewer than
    two values is null, and says so through ``trailing_days_seen``."""
    missing = {"date", "entity", column} - set(raw.columns)
    if missing:
        raise FeatureError(f"entity rows lack column(s) {sorted(missing)}; found {raw.columns}")
    values = raw.select(
        "date",
        pl.col("entity").cast(pl.String),
        column,
        pl.col(column).cast(pl.Float64).alias("value"),
    ).sort("entity", "date")
    trailing = values.rolling(
        "date", period=f"{trailing_days}d", closed="left", group_by="entity"
    ).agg(
        pl.col("value").mean().alias("trailing_mean"),
        pl.col("value").std().alias("trailing_std"),
        pl.col("value").count().cast(pl.Int64).alias("trailing_days_seen"),
    )
    week_before = values.select(
        (pl.col("date") + pl.duration(days=WEEK)).alias("date"),
        "entity",
        pl.col("value").alias("value_7d_before"),
    )
    usable_std = pl.when(pl.col("trailing_std") > 0).then(pl.col("trailing_std"))
    return (
        values.filter(pl.col("date").is_in(list(days)))
        .join(trailing, on=["entity", "date"], how="left")
        .join(week_before, on=["entity", "date"], how="left")
        .select(
            "date",
            "entity",
            column,
            "trailing_mean",
            "trailing_std",
            "trailing_days_seen",
            ((pl.col("value") - pl.col("trailing_mean")) / usable_std).alias("zscore"),
            (pl.col("value") / pl.col("value_7d_before")).log().alias("log_change_7d"),
        )
        .sort("date", "entity")
    )
