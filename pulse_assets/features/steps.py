"""Pipeline steps as polars expressions over a frame sorted by time (and entity, if grouped).

Every statistic is trailing: the value for row t reads rows at or before t only, so a row
never changes when later data arrives. Windows count rows (trading days), not calendar days.
A window that is not yet full gives null, which the pipeline treats as warm-up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from pulse_assets.config import IndicatorSpec, NormalizeParams

STALENESS_SUFFIX = "_staleness_days"


def _over(expr: pl.Expr, by: str | None) -> pl.Expr:
    return expr.over(by) if by else expr


def forward_fill_with_staleness(
    frame: pl.LazyFrame,
    groups: Mapping[str, tuple[Sequence[str], int]],
    *,
    fill_value: float,
    staleness_cap_days: int,
    time_column: str = "date",
    by: str | None = None,
) -> pl.LazyFrame:
    """Forward-fill each column for at most ``max_staleness`` days, then use ``fill_value``.

    ``groups`` maps a source prefix to (its columns, its maximum staleness in days). Each source
    also gets ``<prefix>_staleness_days``: days since any of its columns was last observed,
    capped at ``staleness_cap_days`` (also the value before the first observation), so a model
    can tell a fresh value from a filled one.
    """
    time = pl.col(time_column)
    expressions: list[pl.Expr] = []
    for prefix, (columns, max_staleness) in groups.items():
        for column in columns:
            observed_on = _over(pl.when(pl.col(column).is_not_null()).then(time).forward_fill(), by)
            age = (time - observed_on).dt.total_days()
            filled = _over(pl.col(column).forward_fill(), by)
            expressions.append(
                pl.when(age <= max_staleness)
                .then(filled)
                .otherwise(pl.lit(fill_value))
                .alias(column)
            )
        any_observed = pl.any_horizontal(pl.col(c).is_not_null() for c in columns)
        last_seen = _over(pl.when(any_observed).then(time).forward_fill(), by)
        staleness = (time - last_seen).dt.total_days().fill_null(staleness_cap_days)
        expressions.append(
            staleness.clip(upper_bound=staleness_cap_days)
            .cast(pl.Float64)
            .alias(f"{prefix}{STALENESS_SUFFIX}")
        )
    return frame.with_columns(expressions)


def _indicator(kind: str, source: pl.Expr, window: int) -> pl.Expr:
    if kind == "log_return":
        return (source / source.shift(window)).log()
    if kind == "rolling_volatility":
        return source.rolling_std(window, min_samples=window)
    if kind == "momentum":
        return source / source.shift(window) - 1.0
    if kind == "ma_gap":
        return source / source.rolling_mean(window, min_samples=window) - 1.0
    if kind == "change":
        return source - source.shift(window)
    if kind == "rolling_zscore":
        return _trailing_zscore(source, window)
    if kind == "rsi":
        return _rsi(source, window)
    raise ValueError(f"unknown indicator kind {kind!r}")


def _rsi(source: pl.Expr, window: int) -> pl.Expr:
    """Relative strength index (0..100) with simple trailing means of gains and losses."""
    delta = source - source.shift(1)
    gain = delta.clip(lower_bound=0.0).rolling_mean(window, min_samples=window)
    loss = (-delta).clip(lower_bound=0.0).rolling_mean(window, min_samples=window)
    total = gain + loss
    return (
        pl.when(total > 0)
        .then(100.0 * gain / total)
        .otherwise(pl.when(total.is_not_null()).then(50.0))
    )


def _trailing_zscore(source: pl.Expr, window: int) -> pl.Expr:
    """(x - trailing mean) / trailing std; a constant window has no spread and scores 0."""
    mean = source.rolling_mean(window, min_samples=window)
    std = source.rolling_std(window, min_samples=window)
    return (
        pl.when(std > 0).then((source - mean) / std).otherwise(pl.when(std.is_not_null()).then(0.0))
    )


def indicator_name(spec: IndicatorSpec, window: int) -> str:
    if spec.name:
        return spec.name
    return f"{spec.column}_{spec.kind}_{window}"


def calculate_indicators(
    frame: pl.LazyFrame, indicators: Sequence[IndicatorSpec], by: str | None = None
) -> pl.LazyFrame:
    """Add one column per (indicator, window). Later indicators may read earlier ones."""
    for spec in indicators:
        source = pl.col(spec.column).cast(pl.Float64)
        frame = frame.with_columns(
            _over(_indicator(spec.kind, source, window), by).alias(indicator_name(spec, window))
            for window in spec.windows
        )
    return frame


def normalize(
    frame: pl.LazyFrame, columns: Sequence[str], params: NormalizeParams, by: str | None = None
) -> pl.LazyFrame:
    """Scale each column with statistics of its trailing ``window`` rows only (no look-ahead).

    z-score: (x - mean) / std; min-max: (x - min) / (max - min). A window without spread
    (std or range 0) scores 0. The scaled column gets ``suffix`` (default ``_z`` or ``_mm``)
    and the original stays.
    """
    suffix = params.suffix or ("_z" if params.method == "z-score" else "_mm")
    window = params.window
    scaled: list[pl.Expr] = []
    for column in columns:
        x = pl.col(column).cast(pl.Float64)
        if params.method == "z-score":
            expr = _trailing_zscore(x, window)
        else:
            low = x.rolling_min(window, min_samples=window)
            span = x.rolling_max(window, min_samples=window) - low
            expr = (
                pl.when(span > 0)
                .then((x - low) / span)
                .otherwise(pl.when(span.is_not_null()).then(0.0))
            )
        scaled.append(_over(expr, by).alias(f"{column}{suffix}"))
    return frame.with_columns(scaled)
