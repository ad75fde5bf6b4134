"""Quality facts about a feature table, for its asset checks."""

from __future__ import annotations

from datetime import date

import polars as pl

from pulse_assets.features.pipeline import feature_columns


def non_finite_counts(frame: pl.DataFrame) -> dict[str, int]:
    """Per feature column, how many values are NaN, infinite or null (only columns with any)."""
    if frame.height == 0:
        return {}
    counts = frame.select(
        (~pl.col(c).cast(pl.Float64).is_finite()).fill_null(True).sum().alias(c)
        for c in feature_columns(frame)
    ).row(0, named=True)
    return {column: count for column, count in counts.items() if count}


def duplicated_dates(frame: pl.DataFrame) -> list[date]:
    return frame.filter(pl.col("date").is_duplicated()).get_column("date").unique().sort().to_list()
