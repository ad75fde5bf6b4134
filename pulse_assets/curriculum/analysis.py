"""Where the champions erred before round R: their out-of-sample errors, by feature quantile
bin and by scenario (regime).

Each day t before the cutoff is forecast by the version that was champion on t (the champion
of the round holding t, from the round records), from feature rows dated at or before t; it
counts only when its label resolved before the cutoff. A champion of round Q was trained
before Q started, so every such forecast is out of sample.

The bins: for each analysis feature, quantile bins of its values on the error days; a bin's
error ratio is its mean squared error over the mean squared error of all days, shrunk toward 1
as if the bin held ``shrinkage_days`` more days of average error (a thin bin says little). A
training row's excess error is the mean, over the analysis features, of its bins' ratios,
minus 1: above 0 where the champion has been weak.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from pulse_assets.curriculum.scenarios import SCENARIO, CurriculumError, require
from pulse_assets.evaluation.retrodiction import forecast_days
from pulse_assets.features.pipeline import LABEL_PREFIX
from pulse_assets.training.rounds import ModelLoader, RoundRecord, known_labels

ERROR_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "version": pl.String(),
    "forecast": pl.Float64(),
    "actual": pl.Float64(),
    "error": pl.Float64(),
}


def _spans(records: Sequence[RoundRecord], before: date) -> list[tuple[str, date, date]]:
    """(champion, first day, end) of each run of rounds with one champion, before ``before``."""
    earlier = sorted((r for r in records if r.start < before), key=lambda r: r.start)
    starts = [r.start for r in earlier]
    if len(set(starts)) != len(starts):
        twice = sorted({s for s in starts if starts.count(s) > 1})
        raise CurriculumError(
            f"the round records hold rounds starting on {twice} more than once; "
            "pass one record per round"
        )
    spans: list[tuple[str, date, date]] = []
    if not earlier:
        return []
    for record, end in zip(earlier, [*starts[1:], before], strict=True):
        if spans and spans[-1][0] == record.champion and spans[-1][2] == record.start:
            spans[-1] = (record.champion, spans[-1][1], end)
        else:
            spans.append((record.champion, record.start, end))
    return spans


def champion_errors(
    records: Sequence[RoundRecord],
    features: pl.DataFrame,
    labels: pl.DataFrame,
    label: str,
    load: ModelLoader,
    before: date,
) -> pl.DataFrame:
    """date, version, forecast, actual, error (forecast - actual) of every day ``t < before``
    whose label was known before ``before``, forecast by the version that was champion on t.
    Days before the first record have no champion and are not there."""
    actual = LABEL_PREFIX + label
    require(labels, ["date", actual], "daily_labels")
    known = (
        known_labels(labels, before)
        .select("date", pl.col(actual).cast(pl.Float64).alias("actual"))
        .drop_nulls()
    )
    history = features.filter(pl.col("date") < before)
    parts = [pl.DataFrame(schema=ERROR_SCHEMA)]
    for version, first, end in _spans(records, before):
        made = forecast_days(load(version), history, first, end)
        parts.append(
            made.select(
                "date",
                pl.lit(version).alias("version"),
                pl.col(f"forecast_{label}").cast(pl.Float64).alias("forecast"),
            )
            .join(known, on="date", how="inner")
            .with_columns((pl.col("forecast") - pl.col("actual")).alias("error"))
            .select(list(ERROR_SCHEMA))
        )
    return pl.concat(parts).sort("date")


@dataclass(frozen=True)
class FeatureBins:
    """One analysis feature's quantile edges (from the error days) and each bin's ratio."""

    feature: str
    edges: np.ndarray
    ratios: np.ndarray

    def ratio_of(self, values: np.ndarray) -> np.ndarray:
        return self.ratios[np.searchsorted(self.edges, values, side="right")]


@dataclass(frozen=True)
class ErrorAnalysis:
    """The champions' out-of-sample errors before the cutoff: per day, per feature bin, per
    scenario; ``mse`` is their mean squared error over all days."""

    days: pl.DataFrame  # date, scenario, error, squared_error and the analysis features
    bins: list[FeatureBins]
    table: pl.DataFrame  # feature, bin, low, high, days, mse, ratio
    mse: float

    def row_excess(self, rows: pl.DataFrame) -> np.ndarray:
        """Each row's excess error: mean over the features of its bins' ratios, minus 1."""
        require(rows, [b.feature for b in self.bins], "the training rows")
        if not self.bins:
            return np.zeros(rows.height)
        ratios = np.column_stack(
            [b.ratio_of(rows.get_column(b.feature).to_numpy()) for b in self.bins]
        )
        return ratios.mean(axis=1) - 1.0

    def by_scenario(self) -> pl.DataFrame:
        """scenario, error_days, mse of the error days (join the regime descriptors to it)."""
        return (
            self.days.group_by(SCENARIO)
            .agg(
                pl.len().cast(pl.Int64).alias("error_days"),
                pl.col("squared_error").mean().alias("mse"),
            )
            .sort(SCENARIO)
        )


def _feature_bins(
    feature: str, values: np.ndarray, squared: np.ndarray, quantiles: int, shrinkage: int
) -> tuple[FeatureBins, list[dict[str, object]]]:
    mse = float(squared.mean())
    edges = np.unique(np.quantile(values, np.linspace(0, 1, quantiles + 1)[1:-1]))
    index = np.searchsorted(edges, values, side="right")
    count = np.bincount(index, minlength=edges.size + 1).astype(np.float64)
    total = np.bincount(index, weights=squared, minlength=edges.size + 1)
    # a bin no error day fell in says nothing: ratio 1 (what any shrinkage gives it too)
    ratios = np.divide(
        total + shrinkage * mse,
        (count + shrinkage) * mse,
        out=np.ones_like(total),
        where=count + shrinkage > 0,
    )
    bounds = [None, *edges.tolist(), None]
    table = [
        {
            "feature": feature,
            "bin": k,
            "low": bounds[k],
            "high": bounds[k + 1],
            "days": int(count[k]),
            "mse": float(total[k] / count[k]) if count[k] else None,
            "ratio": float(ratios[k]),
        }
        for k in range(edges.size + 1)
    ]
    return FeatureBins(feature, edges, ratios), table


TABLE_SCHEMA: dict[str, pl.DataType] = {
    "feature": pl.String(),
    "bin": pl.Int64(),
    "low": pl.Float64(),
    "high": pl.Float64(),
    "days": pl.Int64(),
    "mse": pl.Float64(),
    "ratio": pl.Float64(),
}


def analyze_errors(
    errors: pl.DataFrame,
    rows: pl.DataFrame,
    features: Sequence[str],
    quantiles: int,
    shrinkage_days: int,
) -> ErrorAnalysis:
    """Bin ``errors`` (date, error) by the quantiles of ``features`` on the error days, read
    from ``rows`` (date, scenario and the features: the feature rows of those days). The
    mean squared error must be positive: the caller treats a zero one as degenerate."""
    require(errors, ["date", "error"], "the champion errors")
    require(rows, ["date", SCENARIO, *features], "the feature rows of the error days")
    days = (
        errors.select("date", "error")
        .join(rows.select("date", SCENARIO, *features), on="date", how="inner")
        .with_columns((pl.col("error") ** 2).alias("squared_error"))
        .sort("date")
    )
    if days.height == 0:
        raise CurriculumError("no champion error day has a feature row: nothing to analyze")
    squared = days.get_column("squared_error").to_numpy()
    mse = float(squared.mean())
    if not mse > 0:
        raise CurriculumError(f"the champion errors have mean squared error {mse!r}")
    bins, table = [], []
    for feature in features:
        values = days.get_column(feature).to_numpy().astype(np.float64)
        made, rows_of = _feature_bins(feature, values, squared, quantiles, shrinkage_days)
        bins.append(made)
        table.extend(rows_of)
    return ErrorAnalysis(days, bins, pl.DataFrame(table, schema=TABLE_SCHEMA), mse)
