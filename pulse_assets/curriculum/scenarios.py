"""Scenarios: the calendar periods of a round's training window, each described by its regime.

A scenario is every training row of one period (week, month or quarter) among the rows whose
label was known before the round's cutoff, in the last ``window_days``: the rows round R
trains on (:func:`pulse_assets.training.rounds.round_data` picks the same). Its regime is one
statistic per configured descriptor over its rows (mean volatility, change of volatility,
mean absolute poll-margin move, tweet activity, deepest gap below the moving average).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, timedelta

import polars as pl

from pulse_assets.config import CurriculumRegime
from pulse_assets.errors import PulseError
from pulse_assets.features.pipeline import LABEL_PREFIX
from pulse_assets.training.rounds import known_labels

SCENARIO = "scenario"
_TRUNCATE = {"week": "1w", "month": "1mo", "quarter": "1q"}


class CurriculumError(PulseError):
    """The curriculum cannot be computed from its inputs: what is missing or wrong."""


def scenario_of(period: str) -> pl.Expr:
    """The scenario of a row: the first day of its calendar period (weeks start on Monday)."""
    return pl.col("date").dt.truncate(_TRUNCATE[period]).alias(SCENARIO)


def require(frame: pl.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = sorted({c for c in columns if c not in frame.columns})
    if missing:
        raise CurriculumError(
            f"{what} lacks column(s) {missing}; fix curriculum.regimes or "
            "curriculum.analysis_features in configs/ to name columns of daily_features"
        )


def window_rows(
    features: pl.DataFrame,
    labels: pl.DataFrame,
    label: str,
    cutoff: date,
    window_days: int,
    columns: Iterable[str],
    period: str,
) -> pl.DataFrame:
    """The round's training rows (label known before ``cutoff``, in the last ``window_days``):
    date, scenario and ``columns``, in time order. Nothing dated at or after the cutoff, and
    no label that resolves on or after it, is read."""
    wanted = list(dict.fromkeys(columns))
    require(features, wanted, "daily_features")
    known = (
        known_labels(labels, cutoff)
        .filter(pl.col("date") >= cutoff - timedelta(days=window_days))
        .filter(pl.col(LABEL_PREFIX + label).is_not_null())
        .select("date")
    )
    rows = (
        features.filter(pl.col("date") < cutoff)
        .select("date", *wanted)
        .join(known, on="date", how="inner")
        .sort("date")
        .with_columns(scenario_of(period))
    )
    bad = [c for c in wanted if not rows.get_column(c).cast(pl.Float64).is_finite().all()]
    if bad:
        raise CurriculumError(
            f"training rows before {cutoff} hold null/NaN/inf in {bad}; "
            "fix the feature pipeline before training"
        )
    return rows


def _statistic(regime: CurriculumRegime) -> pl.Expr:
    column = pl.col(regime.column).cast(pl.Float64)
    if regime.stat == "mean":
        return column.mean()
    if regime.stat == "mean_abs":
        return column.abs().mean()
    if regime.stat == "min":
        return column.min()
    if regime.stat == "max":
        return column.max()
    if regime.stat == "std":
        return column.std(ddof=0)
    return column.sort_by("date").last() - column.sort_by("date").first()


def describe_scenarios(rows: pl.DataFrame, regimes: Mapping[str, CurriculumRegime]) -> pl.DataFrame:
    """One row per scenario: scenario, first, last, rows and one column per regime descriptor."""
    require(rows, ["date", SCENARIO, *(r.column for r in regimes.values())], "the training rows")
    return (
        rows.group_by(SCENARIO)
        .agg(
            pl.col("date").min().alias("first"),
            pl.col("date").max().alias("last"),
            pl.len().cast(pl.Int64).alias("rows"),
            *(_statistic(regime).alias(name) for name, regime in regimes.items()),
        )
        .sort(SCENARIO)
    )
